"""Stage 4, one job per chunk: `lipbench render-chunk` loads the model the plan assigns to
the chunk (GAN/NOGAN), renders the chunk's frame range from the FULL-file mel and writes a
video-only chunk with its stats (.json) and edge frames (.npz) beside it.

Unlike the in-process replica pool, every chunk job pays process start, imports and the
model load itself; its benchmark TSV records that, and `merge` puts it in run.json."""


rule infer_chunk:
    input:
        audio=res("{job}/audio.wav"),
        plan=res("{job}/plan.json"),
        weights=chunk_weights,
        avatar=avatar_input,
    output:
        video=res("{job}/chunks/{k}.mp4"),
        stats=res("{job}/chunks/{k}.json"),
        edges=res("{job}/chunks/{k}.npz"),
    params:
        lipbench=LIPBENCH,
        model=chunk_model,
        avatar=lambda wc: JOBS[wc.job]["avatar"],
        settings=settings("fps", "seed", "device", "render", "face", "weights", "video"),
        chunk_dir=lambda wc, output: str(Path(output.video).parent),
    threads: chunk_threads
    resources:
        # One Wav2Lip replica + the avatar + ffmpeg: peak RSS ≈ 0.9 GB on the default avatar.
        mem_mb=lambda wc, attempt: 3000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
        # gpu=1 on CUDA, so `--resources gpu=K` bounds the chunks on the GPU at once (and the
        # SLURM plugin turns it into --gpus=1); 0 on CPU.
        gpu=GPU,
    conda:
        ENV
    log:
        res("{job}/logs/infer_chunk_{k}.log"),
    benchmark:
        res("{job}/benchmarks/infer_chunk_{k}.tsv")
    shell:
        # Temp files a killed attempt left behind (outputs are written atomically).
        "rm -f {params.chunk_dir}/.{wildcards.k}.*.part.* && "
        "{params.lipbench} --config-json {params.settings:q} render-chunk --audio {input.audio} --plan {input.plan} --chunk {wildcards.k}"
        " --model {params.model} --avatar {params.avatar:q} --threads {threads}"
        " --out {output.video} > {log} 2>&1"
