"""Stage 4, one job per chunk: `lipbench render-chunk` loads the model the plan assigns to
the chunk (GAN/NOGAN), renders the chunk's frame range from the FULL-file mel and writes a
video-only chunk with its stats (.json) and edge frames (.npz) beside it.

Unlike the in-process replica pool, every chunk job pays process start, imports and the
model load itself; its benchmark TSV records that, and `merge` puts it in run.json. Beside
the TSV, `infer_chunk_{k}.job.json` (render-chunk's own stamps) says where and when the job ran (host; on SLURM the job
id and its submit/start times), so queue wait can be told apart from render time."""

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
        job_info=res("{job}/benchmarks/infer_chunk_{k}.job.json"),
    params:
        lipbench=LIPBENCH,
        cuda_env=chunk_cuda_env,
        model=chunk_model,
        avatar=lambda wc: JOBS[wc.job]["avatar"],
        settings=settings("fps", "seed", "device", "render", "face", "weights", "video"),
        chunk_dir=lambda wc, output: str(Path(output.video).parent),
        benchmark=lambda wc: res(f"{wc.job}/benchmarks/infer_chunk_{wc.k}.tsv"),
    threads: chunk_job_threads
    resources:
        # One Wav2Lip replica + the avatar + ffmpeg: peak RSS ≈ 0.9 GB on the default avatar.
        mem_mb=lambda wc, attempt: 3000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
        # 1 only where the config asks for CUDA (see chunk_gpus); `--resources gpu=K` bounds
        # the chunks on a local GPU, the SLURM plugin turns it into --gpus=1.
        gpu=chunk_gpus,
    conda:
        ENV
    log:
        res("{job}/logs/infer_chunk_{k}.log"),
    benchmark:
        res("{job}/benchmarks/infer_chunk_{k}.tsv")
    shell:
        "{params.cuda_env}step_start=$(date +%s.%N); "
        # Temp files a killed attempt left behind (outputs are written atomically), and the
        # previous run's benchmark: Snakemake does not delete it before a rerun, so a killed
        # attempt would otherwise leave an older run's job time for the merge to report.
        "rm -f {params.chunk_dir}/.{wildcards.k}.*.part.* {params.benchmark} && "
        'echo "infer_chunk {wildcards.k}: model {params.model}, {threads} threads, host $(hostname),'
        ' SLURM job ${{SLURM_JOB_ID:-none}}, CUDA_VISIBLE_DEVICES ${{CUDA_VISIBLE_DEVICES-unset}}" > {log} && '
        "{params.lipbench} --config-json {params.settings:q} render-chunk --audio {input.audio} --plan {input.plan} --chunk {wildcards.k}"
        " --model {params.model} --avatar {params.avatar:q} --threads {threads}"
        " --out {output.video} --stamps {output.job_info} --step-start $step_start >> {log} 2>&1 && "
        'echo "job: $(cat {output.job_info})" >> {log}'
