"""What end to end should reach on this host, from what each stage costs (issue 27).

Every frame passes through the stages of the pipeline: the network, the preparation of its
inputs (mel windows, face crops, batch assembly, the uint8 conversion), the paste-back and
the H.264 encode. Each is measured alone as CPU milliseconds per output frame (all threads
of the stage counted) and as its own rate (frames/s with the machine to itself: what the
stage can never exceed, e.g. a single-threaded paste). When the stages overlap perfectly,
end to end is limited by whichever comes first:

- the cores: ``cores × 1000 / Σ cpu_ms`` frames/s (every stage's work must fit), or
- the slowest stage's own rate.

The measured end-to-end rate as a % of this prediction says how well the pipeline overlaps
its stages (100 % = no time lost to waiting). Pure arithmetic, no timing here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

GOAL_PCT_PREDICTED = 90.0  # issue 27: every row ≥ 90 % of its CPU-budget prediction


@dataclasses.dataclass(frozen=True)
class StageCost:
    """One stage's cost per output frame."""

    name: str
    cpu_ms: float  # CPU ms per output frame, all the stage's threads
    max_fps: float = math.inf  # the stage's own rate alone (inf: no cap of its own)


@dataclasses.dataclass(frozen=True)
class Prediction:
    fps: float  # predicted end-to-end frames/s
    cpu_bound_fps: float  # cores × 1000 / Σ cpu_ms
    cpu_ms: float  # Σ cpu_ms per frame
    bound: str  # "cores" or the name of the stage whose own rate caps it
    shares: dict[str, float]  # each stage's share of the CPU per frame, %

    def pct(self, measured_fps: float) -> float | None:
        """``measured_fps`` as a % of the prediction (None when nothing was predicted)."""
        return None if not self.fps or math.isinf(self.fps) else 100.0 * measured_fps / self.fps


def network_stage(cpu_ms: float, fps: float, share: float = 1.0) -> StageCost:
    """The network's cost per *output* frame when it computes only ``share`` of the frames
    (a static avatar renders each distinct mel window once): CPU and cap scale alike."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], not {share}")
    return StageCost("network", cpu_ms * share, fps / share)


def predict(stages: Sequence[StageCost], cores: int) -> Prediction:
    """The end-to-end rate the stages allow on ``cores`` cores (see the module's text)."""
    if cores < 1:
        raise ValueError(f"cores must be ≥ 1, not {cores}")
    if any(s.cpu_ms < 0 or s.max_fps <= 0 for s in stages):
        raise ValueError(f"a stage cannot cost < 0 ms or have a rate ≤ 0: {stages}")
    total = sum(s.cpu_ms for s in stages)
    cpu_bound = math.inf if total == 0 else 1000.0 * cores / total
    cap = min(stages, key=lambda s: s.max_fps, default=None)
    if cap is not None and cap.max_fps < cpu_bound:
        fps, bound = cap.max_fps, cap.name
    else:
        fps, bound = cpu_bound, "cores"
    shares = {s.name: (100.0 * s.cpu_ms / total if total else 0.0) for s in stages}
    return Prediction(fps, cpu_bound, total, bound, shares)


def describe(p: Prediction) -> str:
    """One line: the prediction, its bound and where the CPU goes."""
    parts = ", ".join(f"{k} {v:.0f} %" for k, v in sorted(p.shares.items(), key=lambda kv: -kv[1]))
    limit = "the cores" if p.bound == "cores" else f"the {p.bound} stage's own rate"
    return f"{p.fps:.2f} frames/s ({p.cpu_ms:.1f} CPU-ms/frame: {parts}; bound by {limit})"
