"""The one place a job is resolved: strategy → models, chunk count, threads per replica,
device request, frame label, seeds. (Output names: ``lipbench.outputs``.)

No torch, no numpy: the CLI, the pipeline, the bench, the server and the Snakemake rules
(`workflow/rules/common.smk`) all import this module, and the workflow imports it on every
parse.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from collections.abc import Mapping
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


@dataclass(frozen=True)
class WeightsSettings:
    """The config's ``weights`` section and the seed of the fallback initialisation."""

    dir: str
    files: Mapping[str, str]  # checkpoint name → file name under ``dir``
    label_untrained: bool
    seed: int

    def checkpoint(self, model: str) -> Path:
        return Path(self.dir) / self.files[model]

    def trained(self, model: str) -> bool:
        """Whether ``model`` renders from a checkpoint (a file that is there but does not
        load fails the run instead), decided without loading it."""
        return self.checkpoint(model).exists()


@dataclass(frozen=True)
class JobSettings:
    """What resolving a job needs from the config. Light (no torch, no numpy): the workflow
    builds it on every parse."""

    weights: WeightsSettings
    sequential_model: str
    parallel_models: tuple[str, ...]
    render_threads: int | None  # threads of a lone replica; None: every core
    parallel_threads: int | None  # threads per replica of several; None: cores ÷ replicas
    device: str  # auto | cpu | cuda

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> JobSettings:
        w = cfg["weights"]
        return cls(
            weights=WeightsSettings(w["dir"], dict(w["files"]), bool(w["label_untrained"]), int(cfg["seed"])),
            sequential_model=cfg["sequential"]["model"],
            parallel_models=tuple(cfg["parallel"]["models"]),
            render_threads=cfg["render"]["threads"],
            parallel_threads=cfg["parallel"]["threads_per_replica"],
            device=cfg["device"],
        )  # fmt: skip

    @classmethod
    def of(cls, given: JobSettings | Mapping[str, Any]) -> JobSettings:
        """A front end may pass its validated config dict."""
        return given if isinstance(given, JobSettings) else cls.from_config(given)


def check_models(models: list[str], settings: JobSettings, where: str = "--models") -> list[str]:
    """Checkpoint names must be configured (weights.files), checked before any replica starts."""
    known = settings.weights.files
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
        self, settings: JobSettings | Mapping[str, Any], n_chunks: int, cores: int | None = None
    ) -> int:
        """Threads of each replica that renders a plan of ``n_chunks`` chunks: the pool's
        replicas and the workflow's chunk jobs alike."""
        return self.threads or threads_per_replica(
            len(self.replica_models(n_chunks)), settings, cores
        )


def threads_per_replica(
    replicas: int, settings: JobSettings | Mapping[str, Any], cores: int | None = None
) -> int:
    """Torch threads per replica: replicas × threads ≤ cores unless configured otherwise."""
    s = JobSettings.of(settings)
    cores = cores or cpu_cores()
    if replicas == 1:
        return s.render_threads or cores
    return s.parallel_threads or max(1, cores // replicas)


def resolve_job(
    settings: JobSettings | Mapping[str, Any],
    strategy: str = "sequential",
    models: list[str] | None = None,
    chunks: int | None = None,
    threads: int | None = None,
) -> Job:
    """Strategy → models and chunk count. Sequential means one model and one chunk."""
    s = JobSettings.of(settings)
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy '{strategy}'", f"use one of {', '.join(STRATEGIES)}")
    positive(chunks, "--chunks")
    positive(threads, "--threads", upper=1024)
    if strategy == "sequential":
        chosen = [models[0]] if models else [s.sequential_model]
        chunks = 1
    else:
        chosen = list(models) if models else list(s.parallel_models)
    check_models(chosen, s, "--models" if models else "the config's models")
    return Job(strategy, tuple(chosen), chunks, threads, s.device)


def untrained_label(trained: bool, allowed: bool) -> str | None:
    """Text stamped on every frame: only when some weights are untrained (and the config's
    ``weights.label_untrained`` allows it). The one rule behind both helpers below."""
    return None if trained or not allowed else UNTRAINED_LABEL


def frame_label(trained: bool, settings: JobSettings | Mapping[str, Any]) -> str | None:
    """The label for frames of weights that are (or are not) ``trained``."""
    return untrained_label(trained, JobSettings.of(settings).weights.label_untrained)


def job_label(plan_models: list[str], weights: WeightsSettings) -> str | None:
    """The label of a whole job, from the checkpoints its plan renders with: the same on
    every frame and on both paths (the pool and the workflow's chunk jobs)."""
    return untrained_label(all(weights.trained(m) for m in plan_models), weights.label_untrained)


def model_seed(base: int, model: str) -> int:
    """Seed of a model's random initialisation when its checkpoint is missing: distinct per
    checkpoint name (GAN and NOGAN stay different networks, as real checkpoints are), stable
    across processes, so every replica of one name holds identical weights."""
    return base + zlib.crc32(model.encode()) % 100_000


def uses_gpu(settings: JobSettings | Mapping[str, Any]) -> bool:
    """Whether chunk jobs ask the scheduler for a GPU: only when the config asks for CUDA.
    (``auto`` resolves on the node that runs the chunk; it requests no GPU.)"""
    return JobSettings.of(settings).device == "cuda"


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
