"""Stage 5, waits for every chunk of a job: concat (stream copy), mux the audio once, and
write run.json from the chunk stats and the Snakemake benchmarks (`lipbench merge`)."""


rule merge:
    input:
        chunks=chunk_files("{job}/chunks/{k}.mp4"),
        stats=chunk_files("{job}/chunks/{k}.json"),
        edges=chunk_files("{job}/chunks/{k}.npz"),
        chunk_bench=chunk_files("{job}/benchmarks/infer_chunk_{k}.tsv"),
        job_info=chunk_files("{job}/benchmarks/infer_chunk_{k}.job.json"),
        plan=res("{job}/plan.json"),
        audio=res("{job}/audio.wav"),
        speech=lambda wc: res(f"{wc.job}/speech{JOBS[wc.job]['suffix']}"),
        tts_info=res("{job}/tts.json"),
        stage_bench=[res(f"{{job}}/benchmarks/{s}.tsv") for s in ("tts", "convert", "plan")],
    output:
        video=res("{job}/result.mp4"),
        record=res("{job}/run.json"),
    params:
        lipbench=LIPBENCH,
        strategy=lambda wc: JOBS[wc.job]["strategy"],
        models=lambda wc: ",".join(JOBS[wc.job]["models"]),
        settings=settings("video", "weights", "sequential", "parallel", "render"),
    conda:
        ENV
    log:
        res("{job}/logs/merge.log"),
    shell:
        "{params.lipbench} --config-json {params.settings:q} merge --plan {input.plan} --audio {input.audio} --speech {input.speech}"
        " --tts-info {input.tts_info} --out {output.video} --record {output.record}"
        " --benchmarks {input.stage_bench} {input.chunk_bench} --job-info {input.job_info} --strategy {params.strategy} --models {params.models} --chunks {input.chunks}"
        " > {log} 2>&1"
