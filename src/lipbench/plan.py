"""Chunk planning: how many chunks, and where to cut — on video-frame boundaries, optionally
snapped to the quietest frame nearby so a seam falls between words.

A chunk is a frame range [frame_start, frame_end) over the WHOLE file plus its sample range.
Rendering always reads mel windows from the full-file mel, so chunking never changes a frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_text_atomic
from .audio import SAMPLE_RATE
from .errors import InputError
from .measured_cost import OBJECTIVES, MeasuredCost, load_measured_cost
from .schedule import replica_of

FRAME_RULE = (
    "frames = max(1, round(duration_s * fps)); frame i uses the 16-frame mel window starting at "
    "int(i * 80 / fps), clamped to the last full window"
)


# The seed's decision tree, defined once: "< 10 s: sequential (1 chunk); 10–30 s: 2 chunks;
# > 30 s: 2–4 chunks". ``estimate_optimal_chunks`` is its rule form (the config's plan section
# overrides the numbers), ``seed_rule_range`` its table form (what the report compares with).
SEED_MIN_PARALLEL_S = 10.0
SEED_SECONDS_PER_CHUNK = 15.0
SEED_MAX_CHUNKS = 4
SEED_RULE_TEXT = (
    f"< {SEED_MIN_PARALLEL_S:g} s: sequential (1 chunk); "
    f"{SEED_MIN_PARALLEL_S:g}–{2 * SEED_SECONDS_PER_CHUNK:g} s: 2 chunks; "
    f"> {2 * SEED_SECONDS_PER_CHUNK:g} s: 2–{SEED_MAX_CHUNKS} chunks"
)
POLICIES = ("seed", "fixed", "measured")


def estimate_optimal_chunks(
    duration_s: float,
    replicas: int,
    seconds_per_chunk: float = SEED_SECONDS_PER_CHUNK,
    min_parallel_s: float = SEED_MIN_PARALLEL_S,
    max_chunks: int = SEED_MAX_CHUNKS,
) -> int:
    """The seed's decision tree as one rule: < 10 s → 1 (sequential); otherwise about
    ``seconds_per_chunk`` of audio per chunk (20.5 s / 15 = 1.37 → 2), at least 2 once
    parallel, at most ``max_chunks``, and never more than the replicas available."""
    if duration_s < min_parallel_s or replicas <= 1:
        return 1
    n = max(2, math.ceil(duration_s / seconds_per_chunk))
    return max(1, min(n, max_chunks, replicas))


def seed_rule_range(duration_s: float) -> tuple[int, int]:
    """The chunk counts the seed's table recommends at this duration (low, high)."""
    if duration_s < SEED_MIN_PARALLEL_S:
        return 1, 1
    if duration_s <= 2 * SEED_SECONDS_PER_CHUNK:
        return 2, 2
    return 2, SEED_MAX_CHUNKS


def seed_rule_label(duration_s: float) -> str:
    lo, hi = seed_rule_range(duration_s)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def planned_chunks(
    duration_s: float,
    replicas: int,
    settings: Any,  # request.Settings
    chunks: int | None = None,
    cost: MeasuredCost | None = None,
    stream: bool = True,
) -> tuple[int, str]:
    """How many chunks the planner picks, and under which policy: an explicit ``chunks``,
    else the settings' policy (``measured`` uses ``cost``, or the published cost model, and
    minimises ``plan.objective``). The one place this decision is made: the CLI, the
    pipeline (so the server), the workflow's plan rule and the bench all call it.

    ``stream=False``: the job will not stream, so its latency is its total time and the
    ``latency`` objective reduces to ``throughput``."""
    p = settings.plan
    if chunks is not None:
        return chunks, "fixed"
    if p.policy == "fixed":
        return p.chunks, "fixed"
    objective = p.objective if stream else "throughput"
    if objective not in OBJECTIVES:
        raise InputError(f"unknown plan.objective '{objective}'", f"use one of {', '.join(OBJECTIVES)}")  # fmt: skip
    if p.policy == "measured":
        cost = cost or load_measured_cost(p.cost_model)
        frames = frame_count(round(duration_s * SAMPLE_RATE), settings.fps)
        n = cost.best_chunks(frames, replicas, p.max_chunks, objective, settings.encoder.keyframes)
        return n, "measured" if objective == "throughput" else "measured latency"
    if objective == "latency":
        raise InputError(
            f"plan.objective is 'latency' but plan.policy is '{p.policy}': only the measured "
            "cost model predicts when segments are ready",
            "set plan.policy: measured (after one `lipbench bench`), or plan.objective: throughput",
        )
    n = estimate_optimal_chunks(
        duration_s, replicas, p.seconds_per_chunk, p.min_parallel_s, p.max_chunks
    )
    return n, "seed"


@dataclass
class Chunk:
    index: int
    frame_start: int
    frame_end: int
    sample_start: int
    sample_end: int
    model: str

    @property
    def n_frames(self) -> int:
        return self.frame_end - self.frame_start


@dataclass
class Plan:
    duration_s: float
    fps: float
    n_frames: int
    n_samples: int
    sample_rate: int
    policy: str
    chunks: list[Chunk] = field(default_factory=list)
    frame_rule: str = FRAME_RULE

    @property
    def n_chunks(self) -> int:
        return len(self.chunks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_chunks"] = self.n_chunks
        for c, cd in zip(self.chunks, d["chunks"], strict=True):
            cd["start_s"] = round(c.sample_start / self.sample_rate, 4)
            cd["end_s"] = round(c.sample_end / self.sample_rate, 4)
            cd["n_frames"] = c.n_frames
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        chunk_fields = set(Chunk.__dataclass_fields__)
        chunks = [Chunk(**{k: v for k, v in c.items() if k in chunk_fields}) for c in d["chunks"]]
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "chunks"}
        return cls(chunks=chunks, **kw)

    def save(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def frame_count(n_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    return max(1, round(n_samples / sample_rate * fps))


def frame_energy(
    samples: np.ndarray, n_frames: int, fps: float, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Mean square of the audio under each video frame."""
    edges = np.minimum(
        np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(np.int64), len(samples)
    )
    sq = np.concatenate([[0.0], np.cumsum(np.square(samples, dtype=np.float64))])
    widths = np.maximum(edges[1:] - edges[:-1], 1)
    return (sq[edges[1:]] - sq[edges[:-1]]) / widths


def cut_points(
    samples: np.ndarray,
    n_frames: int,
    n_chunks: int,
    fps: float,
    snap_silence: bool = True,
    snap_window_s: float = 0.5,
) -> list[int]:
    """Frame indices [0, c1, ..., n_frames]: even cuts, each optionally moved to the
    quietest frame within ±snap_window_s, keeping every chunk at least one frame long."""
    n_chunks = max(1, min(n_chunks, n_frames))
    ideal = [round(k * n_frames / n_chunks) for k in range(n_chunks + 1)]
    if not snap_silence or n_chunks == 1:
        return ideal
    energy = frame_energy(samples, n_frames, fps)
    radius = int(round(snap_window_s * fps))
    cuts = [0]
    for k in range(1, n_chunks):
        lo = max(cuts[-1] + 1, ideal[k] - radius)
        hi = min(n_frames - (n_chunks - k), ideal[k] + radius)
        if hi < lo:
            cuts.append(max(cuts[-1] + 1, min(ideal[k], n_frames - (n_chunks - k))))
            continue
        window = energy[lo : hi + 1]
        # Quietest frame; ties → the one nearest the even cut, so silence keeps chunks balanced.
        quiet = np.flatnonzero(window <= window.min() * (1 + 1e-9) + 1e-12) + lo
        cuts.append(int(quiet[np.argmin(np.abs(quiet - ideal[k]))]))
    cuts.append(n_frames)
    return cuts


def make_plan(
    samples: np.ndarray,
    fps: float,
    n_chunks: int,
    models: list[str],
    policy: str = "fixed",
    snap_silence: bool = True,
    snap_window_s: float = 0.5,
) -> Plan:
    """Plan ``n_chunks`` frame-aligned chunks; chunk k's model is its replica's
    (``schedule.replica_of``)."""
    n_samples = len(samples)
    n_frames = frame_count(n_samples, fps)
    cuts = cut_points(samples, n_frames, n_chunks, fps, snap_silence, snap_window_s)

    def sample_at(frame: int) -> int:
        return min(n_samples, round(frame * SAMPLE_RATE / fps))

    chunks = [
        Chunk(
            index=k,
            frame_start=a,
            frame_end=b,
            sample_start=sample_at(a),
            sample_end=n_samples if k == len(cuts) - 2 else sample_at(b),
            model=models[replica_of(k, len(models))],
        )
        for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))
    ]
    return Plan(
        duration_s=n_samples / SAMPLE_RATE,
        fps=fps,
        n_frames=n_frames,
        n_samples=n_samples,
        sample_rate=SAMPLE_RATE,
        policy=policy,
        chunks=chunks,
    )


def plan_audio(
    samples: np.ndarray,
    settings: Any,  # request.Settings
    models: list[str],
    chunks: int | None = None,
    stream: bool = True,
) -> Plan:
    """Chunk count from ``planned_chunks`` (an explicit ``chunks``, else the settings'
    policy and objective; ``stream``: whether the job streams); then cut."""
    p = settings.plan
    n, policy = planned_chunks(
        len(samples) / SAMPLE_RATE, len(models), settings, chunks, stream=stream
    )
    return make_plan(samples, settings.fps, n, models, policy, p.snap_silence, p.snap_window_s)


def write_chunk_wavs(samples: np.ndarray, plan: Plan, out_dir: str | Path) -> list[Path]:
    """Write each chunk's audio as chunk_{k}.wav with a chunk_{k}.json sidecar holding its
    frame range (the workflow needs files; inference itself uses the full-file mel)."""
    from .audio import write_wav16k

    out_dir = Path(out_dir)
    paths = []
    for c in plan.chunks:
        wav = write_wav16k(out_dir / f"chunk_{c.index}.wav", samples[c.sample_start : c.sample_end])
        meta = {
            **plan.to_dict()["chunks"][c.index],
            "fps": plan.fps,
            "n_frames_total": plan.n_frames,
        }
        write_text_atomic(out_dir / f"chunk_{c.index}.json", json.dumps(meta, indent=2) + "\n")
        paths.append(wav)
    return paths
