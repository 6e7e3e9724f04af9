"""The run record (run.json), typed: what a run did, how long each stage took, with what.

``build_record`` is the ONE function that makes a record, for the replica-pool path
(`pipeline.Workbench`) and the workflow path (`stitch.merge_job`) alike; readers use
``RunRecord.from_dict`` instead of ``dict.get``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .jobs import UNTRAINED_NOTE
from .metrics import seam_scores
from .sysinfo import machine, versions

RECORD_VERSION = 3


class _Typed:
    """to_dict/from_dict for the record's dataclasses (nested ones named in ``_nested``)."""

    _nested: dict[str, type] = {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for k, v in data.items():
            if k not in names:
                continue
            sub = cls._nested.get(k)
            if sub is not None and v is not None:
                if isinstance(v, list):
                    v = [sub.from_dict(x) for x in v]  # type: ignore[attr-defined]
                elif isinstance(v, dict) and k == "weights" and cls is RunRecord:
                    v = {m: sub.from_dict(w) for m, w in v.items()}  # type: ignore[attr-defined]
                else:
                    v = sub.from_dict(v)  # type: ignore[attr-defined]
            kwargs[k] = v
        return cls(**kwargs)


@dataclass
class WeightsRow(_Typed):
    name: str
    path: str | None
    source: str  # "file" | "seeded-random"
    sha256: str | None
    seed: int | None
    trained: bool


@dataclass
class ChunkRow(_Typed):
    """One chunk as rendered: which replica, which frames, when (epoch seconds and offsets
    from the first chunk's start), how fast."""

    chunk: int
    model: str
    replica: int  # pool: the replica's index; workflow: the chunk job's (= chunk index)
    pid: int
    threads: int
    device: str
    attempts: int
    frame_start: int
    frame_end: int
    frames: int
    start_ts: float
    first_frame_ts: float  # when this chunk's first frame was rendered
    end_ts: float
    start_offset_s: float
    end_offset_s: float
    wall_s: float
    render_s: float
    encode_s: float
    fps: float
    peak_rss_mb: float
    gpu_max_mem_mb: float | None = None


@dataclass
class RenderChoice(_Typed):
    """What one replica renders with, as it resolved the asked options ("auto" → what
    calibration chose): recorded once per replica."""

    backend: str  # torch | openvino
    precision: str  # fp32 | bf16 (asked, after "auto")
    effective_precision: str  # what the hardware runs
    exact: bool | None  # within one level of 255 of plain fp32 on this checkpoint
    batch_size: int
    threads: int
    fidelity: dict[str, Any] | None  # max_abs_px, mean_abs_px, psnr_db vs plain fp32
    chosen_by: str  # "calibration" | "config"
    engine: dict[str, Any]  # the backend's own facts (version, hints)
    calibration: dict[str, Any] | None  # the cached calibration entry, when "auto" was asked


@dataclass
class ReplicaRow(_Typed):
    replica: int
    model: str
    device: str
    pid: int
    load_s: float
    weights: WeightsRow
    render: RenderChoice
    peak_rss_mb: float | None = None
    _nested = {"weights": WeightsRow, "render": RenderChoice}


@dataclass
class Startup(_Typed):
    """Where the time before a run's first frame went, seconds, in order. The first three
    exist when a front end marked them (the CLI: from process start); their sum with the rest
    is ``first_frame_s`` within a few milliseconds."""

    interpreter_s: float | None  # origin → the CLI's main(): Python's start and first imports
    imports_s: float | None  # the pipeline's imports (torch, OpenVINO, OpenCV)
    config_s: float | None  # the config read and the request built
    inputs_s: float  # speech, 16 kHz WAV, avatar + face boxes, mel, plan
    model_s: float  # replicas started (weights or compiled model; a first run's calibration)
    first_batch_s: float  # rendering started → the first frame rendered


@dataclass
class Timings(_Typed):
    """Seconds per stage. ``infer`` runs from the first chunk's start to the last chunk's
    end; ``total`` is the job's wall time (workflow: the sum of its stages)."""

    tts: float
    convert: float
    detect: float  # the avatar loaded and its face boxes found (or read from the cache)
    mel: float  # the full-file mel (workflow: the slowest chunk job's)
    split: float  # the audio read and cut into the chunk plan (plan.json)
    infer: float
    merge: float
    total: float
    # latency origin (see latency_origin; the workflow: chunk 0's process start) → the
    # video's first frame rendered
    first_frame_s: float | None = None
    # within `infer`: time when no chunk was rendering (a chunk job waiting in a Slurm or
    # Snakemake queue, or loading its model); infer − idle = time some chunk was rendering
    infer_idle_s: float | None = None
    # origin → the first frame a viewer could play: a streamed run's first segment, or a
    # non-streamed run's finished MP4 (see lipbench.stream.stall); None on the workflow path
    first_playable_s: float | None = None
    # a streamed run: how long playback at the video's fps would wait for segments
    stall_s: float | None = None
    # what first_frame_s / first_playable_s count from: "process start" | "request" | "job start"
    latency_origin: str | None = None
    startup: Startup | None = None  # the pool path: first_frame_s split by what it went to
    _nested = {"startup": Startup}


@dataclass
class ModelLoad(_Typed):
    """Checkpoint loading: once per pool (pool path) or once per chunk job (workflow)."""

    per_job: bool
    load_s: list[float]  # per replica (pool) or per chunk job (workflow)
    note: str
    pool_start_s: float | None = None  # pool: starting all replicas (not in timings.total)
    waited_s: float | None = None  # pool: how long this job waited for them
    per_chunk_job_s: list[float] | None = None  # workflow: each chunk job's whole wall time
    per_chunk_overhead_s: list[float] | None = None  # ... minus its render time


@dataclass
class Outputs(_Typed):
    video: str
    record: str
    audio: str
    speech: str | None
    plan: str


@dataclass
class Placement(_Typed):
    """Where and when a workflow chunk job ran, from its own stamps (`render-chunk --stamps`): queue
    wait (SLURM only), start-up on the node, set-up (process start, imports, model load,
    detection), render. Seconds."""

    chunk: int
    host: str
    slurm_job_id: int | None
    queue_wait_s: float | None
    node_startup_s: float | None
    setup_s: float
    render_s: float
    job_s: float


@dataclass
class StreamInfo(_Typed):
    """A streamed run: its HLS playlist and when each segment became ready (seconds from
    the latency origin), in play order."""

    playlist: str
    segment_s: float
    segments: int
    ready_s: list[float]
    durations_s: list[float]


@dataclass
class FaceInfo(_Typed):
    """The avatar's face in this run: how it was found, followed and pasted, and the output
    frames left without a mouth patch because the tracked face was absent."""

    # the face section as used: detector, select, loop, pads, and blend — "feather" (the
    # default) mixes the generated face in through a soft border, so pixels near the box
    # border differ from the reference's hard rectangle ("box")
    settings: dict[str, Any]
    detector: str
    frames: int  # output frames
    frames_without_face: int  # written unchanged
    ranges_without_face: list[list[int]]  # [start, end) output frames
    frames_faded: int  # the patch fading in or out at a gap's edges
    avatar_frames_used: int


@dataclass
class TTSInfo(_Typed):
    engine: str
    lang: str
    sample_rate: int
    chars: int


@dataclass
class RunRecord(_Typed):
    record_version: int
    engine: str  # "pool" | "snakemake"
    strategy: str
    models: list[str]
    weights: dict[str, WeightsRow]
    weights_trained: bool
    weights_note: str | None
    label: str | None
    timings: Timings
    plan: dict[str, Any]
    chunks: list[ChunkRow]
    seams: list[dict[str, Any]]
    frames: int
    fps: float
    audio_duration_s: float
    render_fps: float | None
    replicas: list[ReplicaRow]
    device: str
    threads_per_replica: int
    one_chunk_on_full_replica: bool
    outputs: Outputs
    model_load: ModelLoad
    cpu: dict[str, Any]
    restarts: int
    tts: TTSInfo | None
    render_options: dict[str, Any]
    snakemake_benchmarks: dict[str, float]
    machine: dict[str, Any]
    versions: dict[str, str]
    created: str
    placements: list[Placement] | None = None  # workflow runs: each chunk job's queue wait etc.
    stream: StreamInfo | None = None  # streamed runs (generate --stream, the page's Stream mode)
    face: FaceInfo | None = None
    _nested = {
        "face": FaceInfo,
        "weights": WeightsRow,
        "timings": Timings,
        "chunks": ChunkRow,
        "replicas": ReplicaRow,
        "outputs": Outputs,
        "model_load": ModelLoad,
        "tts": TTSInfo,
        "placements": Placement,
        "stream": StreamInfo,
    }

    def write(self, path: str | Path) -> Path:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=_default)
        return write_text_atomic(path, text + "\n")


def read_record(path: str | Path) -> RunRecord:
    return RunRecord.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def build_record(
    *,
    engine: str,
    strategy: str,
    plan: Any,  # plan.Plan
    chunks: list[ChunkRow],
    edges: list[dict[str, Any]],
    replicas: list[ReplicaRow],
    timings: Timings,
    outputs: Outputs,
    model_load: ModelLoad,
    cpu: dict[str, Any],
    label: str | None,
    tts: TTSInfo | None,
    render_options: dict[str, Any],
    threads_per_replica: int,
    one_chunk_on_full_replica: bool,
    process_start_ts: float,
    latency: Any = None,  # stream.run.Latency (pool path); None on the workflow path
    face: FaceInfo | None = None,
    snakemake_benchmarks: dict[str, float] | None = None,
    placements: list[Placement] | None = None,
) -> RunRecord:
    """The run record of either path. Pure: the arguments are left as they are (chunk
    offsets, per-replica peak memory and the latency timings are filled into copies)."""
    t0 = min(c.start_ts for c in chunks)
    first = min(chunks, key=lambda c: c.chunk)
    rows = [
        dataclasses.replace(c, start_offset_s=round(c.start_ts - t0, 4), end_offset_s=round(c.end_ts - t0, 4))
        for c in sorted(chunks, key=lambda c: c.chunk)
    ]  # fmt: skip
    reps = [
        dataclasses.replace(r, peak_rss_mb=max((c.peak_rss_mb for c in chunks if c.replica == r.replica), default=r.peak_rss_mb))
        for r in replicas
    ]  # fmt: skip
    timed = dataclasses.replace(
        timings,
        first_frame_s=round(first.first_frame_ts - process_start_ts, 4),
        infer_idle_s=round(max(0.0, timings.infer - busy_seconds(chunks)), 4),
    )
    if latency is not None:
        timed = dataclasses.replace(
            timed, first_playable_s=latency.first_playable_s, stall_s=latency.stall_s,
            latency_origin=latency.origin,
        )  # fmt: skip
    weights: dict[str, WeightsRow] = {}
    for r in reps:
        weights.setdefault(r.model, r.weights)
    trained = all(w.trained for w in weights.values())
    order = [c.model for c in plan.chunks]
    return RunRecord(
        record_version=RECORD_VERSION,
        engine=engine,
        strategy=strategy,
        models=sorted(set(order), key=order.index),
        weights=weights,
        weights_trained=trained,
        weights_note=None if trained else UNTRAINED_NOTE,
        label=label,
        timings=timed,
        plan=plan.to_dict(),
        chunks=rows,
        seams=seam_scores(edges),
        frames=plan.n_frames,
        fps=plan.fps,
        audio_duration_s=plan.duration_s,
        render_fps=round(plan.n_frames / timings.infer, 3) if timings.infer else None,
        replicas=reps,
        device=reps[0].device,
        threads_per_replica=threads_per_replica,
        one_chunk_on_full_replica=one_chunk_on_full_replica,
        outputs=outputs,
        model_load=model_load,
        cpu=cpu,
        restarts=sum(c.attempts - 1 for c in chunks),
        tts=tts,
        render_options=render_options,
        snakemake_benchmarks=snakemake_benchmarks or {},
        placements=placements,
        stream=None if latency is None else latency.stream,
        face=face,
        machine=machine(),
        versions=versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def busy_seconds(chunks: list[ChunkRow]) -> float:
    """Length of the union of the chunks' [start, end] intervals."""
    total, reach = 0.0, float("-inf")
    for c in sorted(chunks, key=lambda c: c.start_ts):
        start = max(c.start_ts, reach)
        if c.end_ts > start:
            total += c.end_ts - start
        reach = max(reach, c.end_ts)
    return total


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
