"""The one place a job is resolved: strategy → models, chunk count, threads per replica,
device request, frame label, seeds, output names.

No torch, no numpy: the CLI, the pipeline, the bench, the server and the Snakemake rules
(`workflow/rules/common.smk`) all import this module, and the workflow imports it on every
parse.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

STRATEGIES = ("sequential", "parallel")
UNTRAINED_LABEL = "untrained weights"
UNTRAINED_NOTE = (
    "seeded-random: no checkpoint found in weights/, so the mouth region comes from UNTRAINED "
    "weights — this is not a real lip-sync (put wav2lip_gan.pth / wav2lip.pth in weights/)"
)


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. a Slurm allocation), not the
    machine's total."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_models(models: list[str], cfg: dict[str, Any], where: str = "--models") -> list[str]:
    """Checkpoint names must be configured (weights.files), checked before any replica starts."""
    known = cfg["weights"]["files"]
    unknown = [m for m in models if m not in known]
    if unknown or not models:
        raise InputError(
            f"{where}: unknown checkpoint name(s) {', '.join(map(repr, unknown)) or '(none given)'}",
            f"use names from weights.files in the config: {', '.join(sorted(known))}",
        )
    return models


def positive(value: int | float | None, flag: str, *, upper: float | None = None) -> None:
    """A numeric flag must be > 0 (and ≤ upper); None means 'not given'."""
    if value is None:
        return
    if value <= 0 or (upper is not None and value > upper):
        bound = f" and ≤ {upper:g}" if upper is not None else ""
        raise InputError(f"{flag} must be > 0{bound}, got {value:g}", f"pass a valid {flag}")


@dataclass(frozen=True)
class Job:
    """What a run will do, every choice explicit. Built by ``resolve_job`` only."""

    strategy: str
    models: tuple[str, ...]  # checkpoints the strategy uses, in chunk order
    chunks: int | None  # forced chunk count; None: the plan policy decides
    threads: int | None  # torch threads per replica asked for; None: ``threads_per_replica``
    device: str  # the config's request: auto | cpu | cuda (resolved on the node)

    def replica_models(self, n_chunks: int) -> tuple[str, ...]:
        """Models that get a replica. One chunk cannot use a second replica, so a one-chunk
        parallel job renders like sequential: one replica with all the cores."""
        if self.strategy == "parallel" and n_chunks == 1 and self.threads is None:
            return self.models[:1]
        return self.models

    def one_chunk_on_full_replica(self, n_chunks: int) -> bool:
        return self.replica_models(n_chunks) != self.models

    def threads_per_replica(
        self, cfg: dict[str, Any], n_chunks: int, cores: int | None = None
    ) -> int:
        return self.threads or threads_per_replica(len(self.replica_models(n_chunks)), cfg, cores)


def threads_per_replica(replicas: int, cfg: dict[str, Any], cores: int | None = None) -> int:
    """Torch threads per replica: replicas × threads ≤ cores unless configured otherwise."""
    cores = cores or cpu_cores()
    if replicas == 1:
        return cfg["render"]["threads"] or cores
    return cfg["parallel"]["threads_per_replica"] or max(1, cores // replicas)


def resolve_job(
    cfg: dict[str, Any],
    strategy: str = "sequential",
    models: list[str] | None = None,
    chunks: int | None = None,
    threads: int | None = None,
) -> Job:
    """Strategy → models and chunk count. Sequential means one model and one chunk."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy '{strategy}'", f"use one of {', '.join(STRATEGIES)}")
    positive(chunks, "--chunks")
    positive(threads, "--threads", upper=1024)
    if strategy == "sequential":
        chosen = [models[0]] if models else [cfg["sequential"]["model"]]
        chunks = 1
    else:
        chosen = list(models) if models else list(cfg["parallel"]["models"])
    check_models(chosen, cfg, "--models" if models else "the config's models")
    return Job(strategy, tuple(chosen), chunks, threads, cfg["device"])


def frame_label(trained: bool, cfg: dict[str, Any]) -> str | None:
    """Text stamped on every frame: only when some weights are untrained (and allowed)."""
    return None if trained or not cfg["weights"]["label_untrained"] else UNTRAINED_LABEL


def model_seed(base: int, model: str) -> int:
    """Seed of a model's random initialisation when its checkpoint is missing: distinct per
    checkpoint name (GAN and NOGAN stay different networks, as real checkpoints are), stable
    across processes, so every replica of one name holds identical weights."""
    return base + zlib.crc32(model.encode()) % 100_000


def uses_gpu(cfg: dict[str, Any]) -> bool:
    """Whether chunk jobs ask the scheduler for a GPU: only when the config asks for CUDA.
    (``auto`` resolves on the node that runs the chunk; it requests no GPU.)"""
    return cfg["device"] == "cuda"


def has_nvidia_driver() -> bool:
    return shutil.which("nvidia-smi") is not None


def replica_device(device: str, index: int, gpus: int) -> str:
    """The device of replica (or workflow chunk job) ``index``: with ``cuda`` and several
    visible GPUs, round-robin ``cuda:{index % gpus}``; otherwise ``device`` as it is (the
    CPU, one GPU, or a GPU named explicitly such as ``cuda:1``). The pool and the workflow
    both place replicas with this function."""
    if device != "cuda" or gpus <= 1:
        return device
    return f"cuda:{index % gpus}"


def visible_gpus(device: str) -> int:
    """GPUs torch sees in this process (it honours CUDA_VISIBLE_DEVICES); 0 off CUDA. Imports
    torch only when the device is CUDA, which has imported it already."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def nvidia_gpu_ids(env: dict[str, str] | None = None) -> list[str]:
    """GPUs a job on this machine may use, as CUDA_VISIBLE_DEVICES names them: its entries
    when set (a Slurm job's or the user's choice), else the indices `nvidia-smi -L` lists."""
    env = os.environ if env is None else env
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip()]
    if not has_nvidia_driver():
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    n = sum(line.startswith("GPU ") for line in out.stdout.splitlines())
    return [str(i) for i in range(n)]


def chunk_cuda_visible(index: int, ids: list[str]) -> str | None:
    """CUDA_VISIBLE_DEVICES for workflow chunk job ``index`` when Snakemake runs it on this
    machine: the one GPU ``replica_device`` gives replica ``index`` among ``ids``, so chunk
    jobs spread over the GPUs like the pool's replicas (Snakemake's ``gpu`` resource only
    counts GPUs, it assigns none). None with fewer than two GPUs: nothing to choose."""
    if len(ids) < 2:
        return None
    return ids[int(replica_device("cuda", index, len(ids)).split(":")[1])]


@dataclass(frozen=True)
class OutputNames:
    """Every file a ``generate`` run may create or replace, all derived from ``--out``:
    ``x.mp4``, ``x.run.json`` and the side files under ``x.files/``. A run touches nothing
    else, so two runs into one folder never clobber each other."""

    video: Path
    record: Path
    side: Path  # folder of side files: speech, audio.wav, plan.json, chunks/

    @property
    def speech_stem(self) -> Path:
        return self.side / "speech"

    @property
    def audio(self) -> Path:
        return self.side / "audio.wav"

    @property
    def plan(self) -> Path:
        return self.side / "plan.json"

    @property
    def chunks(self) -> Path:
        return self.side / "chunks"

    def all(self) -> list[Path]:
        return [self.video, self.record, self.side]


def output_names(out: str | os.PathLike) -> OutputNames:
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(
            f"--out must end in .mp4 (got {out})", "e.g. --out results/demo/result.mp4"
        )
    stem = out.with_suffix("")
    return OutputNames(
        video=out,
        record=stem.with_name(stem.name + ".run.json"),
        side=stem.with_name(stem.name + ".files"),
    )
