"""How steps run: the threads and GPUs of chunk jobs as the submit host decides them (and
which GPU a local chunk job takes) and a cluster node sees them, and an interrupt passed on
to the steps Snakemake runs itself.
Helpers only (no rules): the Snakefile includes this file and calls
`pass_interrupts_to_steps` from its `onstart`."""

import os
import shlex
import signal
import sys

from lipbench.jobs import chunk_cuda_visible, nvidia_gpu_ids


def chunk_job_threads(wildcards) -> int:
    """Torch threads for a chunk: `chunk_threads` (cores ÷ models, or the config's), decided
    where Snakemake submits the job. Inside a cluster job (Snakemake's remote mode) the
    SLURM allocation is the truth: sbatch was given those threads as --cpus-per-task, and a
    node with more cores than the submit host must not make the job ask srun for more."""
    allocated = os.environ.get("SLURM_CPUS_PER_TASK")
    if workflow.remote_exec and allocated and allocated.isdigit():
        return int(allocated)
    return chunk_threads(wildcards)


def chunk_gpus(wildcards) -> int:
    """GPUs per chunk job. `device: cuda` takes one (the SLURM plugin asks `--gpus=1`).
    `auto` takes one only when Snakemake runs the chunks on this machine and it has an NVIDIA
    driver (so `--resources gpu=K` bounds the chunks on the GPU); a cluster job asks for none
    and render-chunk resolves `auto` on its node."""
    if uses_gpu(config):
        return 1
    if config["device"] == "auto" and workflow.local_exec and not workflow.remote_exec:
        return 1 if has_nvidia_driver() else 0
    return 0


def chunk_cuda_env(wildcards) -> str:
    """`export CUDA_VISIBLE_DEVICES=<id>; ` for chunk job k when Snakemake runs it on this
    machine with a GPU and several are visible: chunk k gets the GPU that replica k of the
    pool would (lipbench.jobs.replica_device), named as this machine's CUDA_VISIBLE_DEVICES
    names it when set. Snakemake's `gpu` resource only counts GPUs; it assigns none. A
    cluster job keeps what its scheduler set (Slurm puts the GPU it granted in
    CUDA_VISIBLE_DEVICES), and with one GPU or none the variable is left as it is; inside
    the job, `cuda` is then the first visible GPU."""
    if not workflow.local_exec or workflow.remote_exec or chunk_gpus(wildcards) == 0:
        return ""
    chosen = chunk_cuda_visible(int(wildcards.k), nvidia_gpu_ids())
    return "" if chosen is None else f"export CUDA_VISIBLE_DEVICES={shlex.quote(chosen)}; "


def pass_interrupts_to_steps() -> None:
    """Ctrl-C in a terminal reaches the whole foreground process group, so the steps'
    processes (render-chunk, ffmpeg) stop with Snakemake. A SIGINT sent to Snakemake alone
    (`kill -INT`, a notebook's interrupt button) does not: the local executor then waits for
    every running step to finish, minutes for a long chunk. So on SIGINT, when Snakemake runs
    the steps itself, pass it on to its descendants first (unless the terminal already did),
    then stop as usual. Cluster jobs are left alone: the SLURM plugin cancels them (scancel)
    and a half-killed sbatch could leave a job nobody knows about."""
    if workflow.remote_exec:
        return
    previous = signal.getsignal(signal.SIGINT)
    stop = previous if callable(previous) else signal.default_int_handler

    def from_terminal() -> bool:
        try:
            return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
        except (OSError, ValueError, AttributeError):
            return False

    def handler(signum, frame):
        if workflow.local_exec and not from_terminal():
            import psutil

            for child in psutil.Process().children(recursive=True):
                try:
                    child.send_signal(signal.SIGINT)
                except psutil.Error:
                    pass
        stop(signum, frame)

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (an API caller's worker thread): leave it be
        pass
