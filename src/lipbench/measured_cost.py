"""The cost model `lipbench bench` measures on a machine, as the planner's ``measured`` policy
reads it: predicted job time and predicted streamed playback for a chunk count, and the
count with the lowest predicted cost for an objective."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .keyframes import Keyframes
from .schedule import busiest_frames
from .stream.stall import Playback, playback, segment_schedule

# What the ``measured`` policy minimises: the job's total time, or what a viewer of the
# streamed video waits (first playable frame + stalls; see ``lipbench.stream.stall``).
OBJECTIVES = ("throughput", "latency")


@dataclass
class MeasuredCost:
    """A cost model measured by `lipbench bench` on this machine (the ``measured`` policy):
    frames/s of one replica at each thread count, per-replica frames/s while k replicas
    render at once, each strategy's fixed seconds per job (convert, detect, mel, merge) and
    its start-up seconds (job start → first frame rendering, calibrated on the first segment).

    Predicted job time = fixed + frames on the busiest replica / that replica's rate.
    Predicted latency = ``playback`` of the segments' predicted ready times."""

    cpu: str
    cores: int
    thread_fps: dict[int, float]  # threads → frames/s of ONE replica
    concurrent_fps: dict[int, float]  # k → frames/s of EACH of k replicas running at once
    overhead_s: dict[str, float]  # "sequential" | "parallel" → fixed seconds per job
    created: str = ""
    # "sequential" | "parallel" → seconds from the job's start until its first frame starts
    # rendering; a cost model from before streaming lacks it: ``overhead_s`` stands in
    startup_s: dict[str, float] = field(default_factory=dict)

    def _rate(self, n_chunks: int, replicas: int) -> tuple[str, float | None, int]:
        """(strategy, frames/s per rendering replica, replicas rendering) for a plan."""
        if n_chunks <= 1 or replicas <= 1:  # one replica with every core renders it all
            kind = "sequential" if n_chunks <= 1 else "parallel"
            return kind, self.thread_fps.get(max(self.thread_fps, default=0)), 1
        k = min(replicas, n_chunks)
        return "parallel", self.concurrent_fps.get(k), k

    def predict_s(
        self, frames: int, n_chunks: int, replicas: int, chunk_frames: list[int] | None = None
    ) -> float | None:
        """``chunk_frames``: the plan's actual chunk sizes (silence snapping makes them
        uneven); None assumes an even split. Chunks go to replicas by ``schedule``."""
        kind, rate, k = self._rate(n_chunks, replicas)
        over = self.overhead_s.get(kind)
        if not rate or over is None:
            return None
        if k == 1:
            return frames / rate + over
        if chunk_frames:
            busiest = busiest_frames(chunk_frames, k)
        else:
            busiest = frames * math.ceil(n_chunks / k) / n_chunks
        return busiest / rate + over

    def predict_playback(
        self, frames: int, n_chunks: int, replicas: int, keyframes: Keyframes,
        chunk_frames: list[int] | None = None,
    ) -> Playback | None:  # fmt: skip
        """A streamed job's playback from the job's start: segments cut at ``keyframes`` in
        every chunk, ready as the plan's replicas render them (sequential streams from its
        first segment; a parallel plan's chunk 2 helps only once chunk 1 has played)."""
        kind, rate, k = self._rate(n_chunks, replicas)
        start = self.startup_s.get(kind, self.overhead_s.get(kind))
        if not rate or start is None:
            return None
        sizes = chunk_frames or even_split(frames, n_chunks)
        ready, durations = segment_schedule(sizes, k, rate, keyframes, start)
        return playback(ready, durations)

    def best_chunks(
        self, frames: int, replicas: int, max_chunks: int, objective: str = "throughput",
        keyframes: Keyframes | None = None,
    ) -> int:  # fmt: skip
        """The chunk count with the lowest predicted cost: total time (``throughput``; at most
        one chunk per replica) or first playable + stall (``latency``; any count up to
        ``max_chunks``, since smaller chunks reach the player sooner). 1 (sequential) unless
        another count is predicted better, so the planner never picks a plan its model calls
        worse than sequential."""
        if objective not in OBJECTIVES:
            raise InputError(f"unknown plan objective '{objective}'", f"use one of {', '.join(OBJECTIVES)}")  # fmt: skip

        def cost(n: int) -> float | None:
            if objective == "throughput":
                return self.predict_s(frames, n, replicas)
            played = self.predict_playback(frames, n, replicas, keyframes or Keyframes(25.0))
            return None if played is None else played.latency_s

        top = min(max_chunks, replicas) if objective == "throughput" else max_chunks
        top = 1 if replicas <= 1 else min(top, frames)
        best, best_s = 1, cost(1)
        for n in range(2, max(1, top) + 1):
            t = cost(n)
            if t is not None and (best_s is None or t < best_s - 1e-9):
                best, best_s = n, t
        return best

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasuredCost:
        return cls(
            cpu=d["cpu"],
            cores=int(d["cores"]),
            thread_fps={int(k): float(v) for k, v in d["thread_fps"].items()},
            concurrent_fps={int(k): float(v) for k, v in d["concurrent_fps"].items()},
            overhead_s={k: float(v) for k, v in d["overhead_s"].items()},
            created=d.get("created", ""),
            startup_s={k: float(v) for k, v in (d.get("startup_s") or {}).items()},
        )


def even_split(frames: int, n_chunks: int) -> list[int]:
    """Chunk sizes of an even cut (``cut_points`` without silence snapping)."""
    n = max(1, min(n_chunks, frames))
    ideal = [round(k * frames / n) for k in range(n + 1)]
    return [b - a for a, b in zip(ideal[:-1], ideal[1:], strict=True)]


def load_measured_cost(path: str | Path) -> MeasuredCost:
    """The cost model at ``path`` (``request.cost_model_path``: results_dir/bench/)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"plan.policy is 'measured' but there is no cost model at {path}",
            "run `lipbench bench` once on this machine (it writes one), or use plan.policy: seed",
        )
    try:
        return MeasuredCost.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"cannot read the cost model {path}: {exc}", "run `lipbench bench` again to rewrite it"
        ) from exc
