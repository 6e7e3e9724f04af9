"""lipbench as a Snakemake workflow: for every job in config["jobs"]

    text ─tts─▶ speech.wav ─convert─▶ audio.wav ─plan (checkpoint)─▶ plan.json
         ─infer_chunk × n_chunks─▶ chunks/{k}.mp4 ─merge─▶ result.mp4 + run.json

under results/{job}/. Every rule calls the `lipbench` CLI, so the workflow and the library
cannot disagree. Usage (workflow/README.md has more):

    snakemake --cores 2                                  # every job in config/config.yaml
    snakemake --cores 2 --resources gpu=2                # CUDA: at most 2 chunks on the GPU
    snakemake --profile config/profiles/slurm            # on a SLURM cluster
    snakemake --cores 2 report                           # sweep + report notebooks → HTML
"""

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/execution.smk"
include: "workflow/rules/tts.smk"
include: "workflow/rules/audio.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/report.smk"


onstart:
    pass_interrupts_to_steps()


rule all:
    """Every configured job's outputs (the report is a separate target: `report`)."""
    default_target: True
    input:
        expand(
            res("{job}/{name}"),
            job=JOBS,
            name=["audio.wav", "plan.json", "result.mp4", "run.json"],
        ),
        [res(f"{job}/speech{JOBS[job]['suffix']}") for job in JOBS],
        # One input function per job: each waits for its own plan checkpoint only.
        *[job_chunks(job) for job in JOBS],
