"""One chunk: load a renderer, render a frame range of a job into a video-only file with its
stats. The replica pool, the speed suite and the workflow's `render-chunk` step all render
through ``render_chunk``; ``render_plan_chunk`` is the workflow's unit of work, callable
from Python.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .atomic import atomic_path, write_text_atomic
from .backends import describe
from .config import resolve_device
from .errors import LipbenchError
from .inputs import build_inputs
from .jobs import job_label, model_seed, threads_per_replica
from .metrics import UsageSampler, mean_abs_diff
from .plan import Plan
from .record import ChunkRow, FaceInfo, RenderChoice, ReplicaRow, WeightsRow
from .stages import StageTimer
from .stream.segments import SegmentWriter, StreamTarget
from .video import EncoderSettings, FrameWriter

Edges = dict[str, Any]  # {"first": frame, "last": frame, "steps": [mean |Δ| per step]}


def peak_rss_mb() -> float:
    """This process's own peak RSS. /proc's VmHWM belongs to the current address space;
    getrusage's ru_maxrss survives exec, so a spawned replica would inherit its parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@dataclasses.dataclass(frozen=True)
class ReplicaSpec:
    """How to build one replica: which checkpoint, threads, device, render options."""

    model: str  # checkpoint name: gan, nogan, ...
    threads: int
    device: str
    weights_dir: str
    weights_files: dict[str, str]
    seed: int
    render_options: Any  # render.RenderOptions

    @classmethod
    def for_model(cls, settings: Any, model: str, threads: int, device: str) -> ReplicaSpec:
        """``settings``: request.Settings."""
        w = settings.job.weights
        return cls(model, threads, device, w.dir, dict(w.files), model_seed(w.seed, model),
                   settings.render_options())  # fmt: skip


@dataclasses.dataclass
class LoadedRenderer:
    renderer: Any  # render.Renderer
    weights: WeightsRow
    load_s: float

    def replica_row(self, replica: int, spec: ReplicaSpec) -> ReplicaRow:
        return ReplicaRow(
            replica=replica, model=spec.model, device=spec.device, pid=os.getpid(),
            load_s=round(self.load_s, 4), weights=self.weights,
            render=RenderChoice(**describe(self.renderer), calibration=self.renderer.calibration),
        )  # fmt: skip


def load_renderer(spec: ReplicaSpec) -> LoadedRenderer:
    """Build a Renderer for ``spec``: from the saved OpenVINO network when one exists for
    this checkpoint and request (``backends.ov_cache``: torch is never imported), else by
    loading the checkpoint (or its seeded fallback) with torch — and then saving the
    network for the next start when it is OpenVINO."""
    from .backends import ov_cache
    from .render import Renderer
    from .weights import weights_identity

    t0 = time.perf_counter()
    info, weights_id = weights_identity(
        spec.model, spec.weights_dir, spec.weights_files, seed=spec.seed
    )
    key = ov_cache.NetworkKey.for_request(
        weights_id, spec.render_options, spec.threads, spec.device
    )
    cached = ov_cache.load_cached(key) if spec.device == "cpu" else None
    if cached is not None:
        renderer = Renderer(None, spec.device, spec.render_options, cached=cached)
        return LoadedRenderer(renderer, WeightsRow(**info.to_dict()), time.perf_counter() - t0)

    import torch

    from .weights import load_generator

    torch.set_num_threads(spec.threads)
    model, info = load_generator(
        spec.model, spec.weights_dir, spec.weights_files, seed=spec.seed, device=spec.device
    )
    renderer = Renderer(model, spec.device, dataclasses.replace(spec.render_options))
    if spec.device == "cpu":  # the next start loads this network without torch
        ov_cache.remember(key, renderer, model, weights=info.to_dict())
    del model  # the renderer holds its own (BN-folded) copy; don't keep two in memory
    return LoadedRenderer(renderer, WeightsRow(**info.to_dict()), time.perf_counter() - t0)


def render_chunk(
    renderer: Any,
    job: Any,  # render.JobInputs
    start: int,
    end: int,
    out_path: str | Path,
    encoder: EncoderSettings,
    identity: dict[str, Any],
    tick: Callable[[int], None] | None = None,
    stream: StreamTarget | None = None,
) -> tuple[ChunkRow, Edges]:
    """Render frames [start, end) of ``job`` into a video-only file (atomically). Returns the
    chunk's row (``identity`` gives chunk, model, replica, threads, device) and its edge
    frames + consecutive-frame steps for the seam metric. With ``stream`` the frames go
    into segments as they render and the file is joined from them."""
    started = time.time()
    first_ts = started
    first = prev = None
    steps: list[float] = []
    render_s = 0.0
    w, h = job.avatar.size
    t = time.perf_counter()
    writer_cm = (
        SegmentWriter(out_path, w, h, encoder, stream)
        if stream
        else FrameWriter(out_path, w, h, encoder, start)
    )
    # the encoder's keyframes (whole-video indices): a batch stopping just short of one runs
    # through it, so the segment before it closes sooner (render.batch_bounds)
    keyframes = {start + c for c in encoder.keyframes.bounds(start, end - start)[1:-1]}
    with writer_cm as writer:
        for frame in renderer.render(job, start, end, keyframes):
            render_s += time.perf_counter() - t
            writer.write(frame)
            if first is None:
                first = frame.copy()
                first_ts = time.time()
            if prev is not None:
                steps.append(mean_abs_diff(prev, frame))
            prev = frame
            if tick and writer.frames_written % 8 == 0:
                tick(8)
            t = time.perf_counter()
    ended = time.time()
    n = end - start
    row = ChunkRow(
        **identity, pid=os.getpid(), attempts=1, frame_start=start, frame_end=end, frames=n,
        start_ts=started, first_frame_ts=first_ts, end_ts=ended, start_offset_s=0.0, end_offset_s=0.0,
        wall_s=round(ended - started, 4), render_s=round(render_s, 4),
        encode_s=round(ended - started - render_s, 4),
        fps=round(n / max(ended - started, 1e-9), 3), peak_rss_mb=peak_rss_mb(),
    )  # fmt: skip
    if str(identity.get("device", "")).startswith("cuda"):
        import torch

        row.gpu_max_mem_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row, {"first": np.asarray(first), "last": np.asarray(prev), "steps": steps}


# --- the workflow's unit of work: one chunk of a plan in its own process -------------------


def sidecar_paths(video: str | Path) -> tuple[Path, Path]:
    """Where a workflow chunk's stats (.json) and edge frames (.npz) live: beside it."""
    v = Path(video)
    return v.with_suffix(".json"), v.with_suffix(".npz")


def render_plan_chunk(
    settings: Any,  # request.Settings
    audio: str | Path,
    plan_path: str | Path,
    index: int,
    out: str | Path,
    model: str | None = None,
    avatar: str | None = None,
    threads: int | None = None,
    stamps: str | Path | None = None,
    step_start_ts: float | None = None,
) -> ChunkRow:
    """Render chunk ``index`` of a plan from the FULL-file mel, write the video-only chunk
    and its sidecars (stats with the replica's facts and CPU samples; edge frames).
    ``threads``: as the workflow derives them from the plan (``Job.threads_per_replica``).
    ``stamps``: also write where and when this chunk job ran (``job_stamps``), its step
    having started at ``step_start_ts`` (default: this process's start)."""
    plan = Plan.load(plan_path)
    if not 0 <= index < plan.n_chunks:
        raise LipbenchError(
            f"chunk {index} not in the plan (it has {plan.n_chunks})", "pick 0 … n_chunks-1"
        )
    chunk = plan.chunks[index]
    device = resolve_device(settings.job.device)
    spec = ReplicaSpec.for_model(
        settings, model or chunk.model, threads or threads_per_replica(1, settings.job), device
    )
    loaded = load_renderer(spec)
    timer = StageTimer()
    job, _ = build_inputs(
        settings.face, settings.fps, Path(audio), avatar, timer, str(Path(plan_path).resolve())
    )
    # the label of the whole job, as the pool decides it: every chunk of a job looks alike
    job.label = job_label([c.model for c in plan.chunks], settings.job.weights)
    if job.n_frames != plan.n_frames:
        raise LipbenchError(
            f"plan {plan_path} has {plan.n_frames} frames but {audio} gives {job.n_frames}",
            "re-run the plan step for this audio",
        )
    identity = dict(chunk=index, model=spec.model, replica=index, threads=spec.threads, device=device)  # fmt: skip
    usage_t0 = time.time()
    with UsageSampler(pids=[os.getpid()]) as usage:
        row, edges = render_chunk(
            loaded.renderer, job, chunk.frame_start, chunk.frame_end, out,
            settings.encoder, identity,
        )  # fmt: skip
    stats_path, edges_path = sidecar_paths(out)
    with atomic_path(edges_path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, first=edges["first"], last=edges["last"], steps=np.asarray(edges["steps"])
        )
    sidecar = {
        "row": row.to_dict(),
        "replica": loaded.replica_row(index, spec).to_dict(),
        "detect_s": timer.stages.get("detect", 0.0),
        "mel_s": timer.stages["mel"],
        "label": job.label,
        "face": FaceInfo(
            settings=settings.face.to_dict(), **job.boxes.faceless_summary()
        ).to_dict(),
        "process_start_ts": process_start_ts(),
        "render_options": dataclasses.asdict(spec.render_options),
        "usage": {"t0": usage_t0, **usage.summary()},
    }
    write_text_atomic(stats_path, json.dumps(sidecar, indent=2) + "\n")
    if stamps is not None:
        started = step_start_ts if step_start_ts is not None else process_start_ts()
        write_text_atomic(stamps, json.dumps(job_stamps(started)) + "\n")
    return row


def job_stamps(step_start_ts: float) -> dict[str, Any]:
    """Where and when a workflow chunk job ran (the record's ``placements``): the host; under
    SLURM the job id and its submit and start times from squeue (which works without
    accounting), so a chunk's queue wait can be told apart from its run; the step's start,
    and its end = now. Outside SLURM the slurm fields are None."""
    import socket
    import subprocess

    job_id = os.environ.get("SLURM_JOB_ID")
    submit = start = None
    if job_id:
        try:
            out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%V|%S"], capture_output=True,
                                 text=True, timeout=20).stdout.strip().splitlines()  # fmt: skip
            if out and "|" in out[0]:
                submit, start = (_slurm_epoch(t) for t in out[0].split("|", 1))
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"host": socket.gethostname(), "slurm_job_id": int(job_id) if job_id and job_id.isdigit() else None,
            "submit_ts": submit, "slurm_start_ts": start, "step_start_ts": step_start_ts,
            "step_end_ts": time.time()}  # fmt: skip


def _slurm_epoch(text: str) -> float | None:
    """SLURM prints whole seconds in local time (2026-12-06T05:11:52)."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def process_start_ts() -> float:
    """When this process started (epoch seconds, to a clock tick): the origin of
    ``first_frame_s``. Not psutil's ``create_time``: that adds the start tick to the boot
    time that /proc/stat rounds down to a whole second, so it is early by a fraction of a
    second that differs from boot to boot (0.32 s on one host) and inflates the figure."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started_since_boot)
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc (not Linux)
        return psutil.Process().create_time()


@dataclasses.dataclass
class ChunkSidecar:
    row: ChunkRow
    replica: ReplicaRow
    detect_s: float
    mel_s: float
    label: str | None
    face: FaceInfo | None
    process_start_ts: float
    render_options: dict[str, Any]
    usage: dict[str, Any]
    edges: Edges


def load_sidecar(video: str | Path) -> ChunkSidecar:
    stats_path, edges_path = sidecar_paths(video)
    data = json.loads(stats_path.read_text(encoding="utf-8"))
    z = np.load(edges_path)
    return ChunkSidecar(
        row=ChunkRow.from_dict(data["row"]),
        replica=ReplicaRow.from_dict(data["replica"]),
        detect_s=data["detect_s"],
        mel_s=data.get("mel_s", 0.0),
        label=data.get("label"),
        face=FaceInfo.from_dict(data["face"]) if data.get("face") else None,
        process_start_ts=data["process_start_ts"],
        render_options=data["render_options"],
        usage=data["usage"],
        edges={"first": z["first"], "last": z["last"], "steps": list(z["steps"])},
    )
