"""Stage 3, the chunk plan: a checkpoint, since the chunk count is known only once the
audio exists. The DAG is re-evaluated after it, and infer_chunk fans out per chunk."""


checkpoint plan:
    input:
        res("{job}/audio.wav"),
    output:
        plan=res("{job}/plan.json"),
    params:
        lipbench=LIPBENCH,
        strategy=lambda wc: JOBS[wc.job]["strategy"],
        models=lambda wc: ",".join(JOBS[wc.job]["models"]),
        chunks=lambda wc: f"--chunks {JOBS[wc.job]['chunks']}" if JOBS[wc.job]["chunks"] else "",
        settings=settings("plan", "fps", "weights", "sequential", "parallel"),
    conda:
        ENV
    log:
        res("{job}/logs/plan.log"),
    benchmark:
        res("{job}/benchmarks/plan.tsv")
    shell:
        # A new plan makes every chunk out of date (Snakemake re-renders them); chunk files
        # beyond a smaller plan's count are simply never read again.
        "{params.lipbench} --config-json {params.settings:q} plan {input} --strategy {params.strategy} --models {params.models}"
        " {params.chunks} --out {output.plan} > {log} 2>&1"
