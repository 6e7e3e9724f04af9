"""The cost model, measured in the same bench run, that explains the speed-up.

Measured on noise clips (the network's work per frame does not depend on the sound), each
timed run checked for contamination like every other:

- frames/s of ONE replica at 1, 2, 4, … up to the sequential strategy's threads;
- frames/s of EACH of k replicas rendering at once (k = the parallel model sets' sizes,
  one chunk per replica, with the threads per replica the parallel strategy uses);
- each strategy's fixed seconds per job (convert, face boxes, mel, merge: total − infer);
- each strategy's start-up: job start → its first frame starts rendering, calibrated so the
  first segment's predicted ready time matches the measured one (``startup_from_record``).

``measured_cost.MeasuredCost`` turns these into a predicted time per plan (the ``measured`` plan
policy uses the same numbers), and ``explain`` into the report's paragraph.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..keyframes import Keyframes
from ..measured_cost import MeasuredCost
from ..schedule import busiest_frames
from .grid import Comparison, RunConfig
from .stats import Interval


def thread_counts(full: int) -> list[int]:
    """1, 2, 4, … below ``full``, and ``full`` itself (every count on a 2-core machine)."""
    out, t = [], 1
    while t < full:
        out.append(t)
        t *= 2
    return [*out, full]


@dataclass
class CostMeasurement:
    kind: str  # "threads" (one replica) | "replicas" (k at once)
    replicas: int
    threads: int  # per replica
    models: list[str]
    frames: int
    infer_s: float
    total_s: float
    fps_per_replica: float  # mean over the rendering replicas of frames / the chunk's wall time
    attempts: int
    clean: bool
    contamination: dict[str, Any] = field(default_factory=dict)
    startup_s: float | None = None  # job start → first frame starting to render (see above)

    @property
    def fps_total(self) -> float:
        return self.fps_per_replica * self.replicas

    @classmethod
    def from_record(cls, kind: str, rec: dict[str, Any], attempts: int, clean: bool,
                    contamination: dict[str, Any]) -> CostMeasurement:  # fmt: skip
        chunks = rec["chunks"]
        rates = [c["frames"] / max(c["wall_s"], 1e-9) for c in chunks]
        return cls(
            kind=kind, replicas=len({c["replica"] for c in chunks}), threads=rec["threads_per_replica"],
            models=[c["model"] for c in chunks], frames=rec["frames"],
            infer_s=rec["timings"]["infer"], total_s=rec["timings"]["total"],
            fps_per_replica=round(sum(rates) / len(rates), 3), attempts=attempts, clean=clean,
            contamination=contamination, startup_s=startup_from_record(rec),
        )  # fmt: skip


def startup_from_record(rec: dict[str, Any]) -> float | None:
    """Seconds from the job's start until its first frame started rendering, as the latency
    model (``stream.stall.segment_schedule``) counts it. A streamed run: the first segment's
    measured ready time less its frames at chunk 0's rate, so the encoder's and the batches'
    delays are inside. A plain run: chunk 0's start (first_frame_s counts from the origin)."""
    t = rec["timings"]
    chunk0 = min(rec["chunks"], key=lambda c: c["chunk"])
    rate = chunk0["frames"] / max(chunk0["wall_s"], 1e-9)
    stream = rec.get("stream")
    if stream and stream.get("ready_s"):
        frames = round(stream["durations_s"][0] * float(rec["plan"]["fps"]))
        return round(max(0.0, stream["ready_s"][0] - frames / rate), 4)
    if t.get("first_frame_s") is None:
        return None
    return round(max(0.0, t["first_frame_s"] - (chunk0["first_frame_ts"] - chunk0["start_ts"])), 4)


@dataclass
class CostReport:
    measurements: list[CostMeasurement]
    cost: MeasuredCost | None  # None: some measurement stayed contaminated
    clip_s: float
    busy: str | None = None  # why it is not measurable

    def to_dict(self) -> dict[str, Any]:
        return {
            "clip_s": self.clip_s,
            "measurable": self.cost is not None,
            "busy": self.busy,
            "model": self.cost.to_dict() if self.cost else None,
            "measurements": [asdict(m) for m in self.measurements],
        }


def fit(measurements: list[CostMeasurement], cpu: str, cores: int) -> MeasuredCost:
    """The planner's cost model from clean measurements."""
    thread_fps = {m.threads: m.fps_per_replica for m in measurements if m.kind == "threads"}
    concurrent = {m.replicas: m.fps_per_replica for m in measurements if m.kind == "replicas"}
    full = max(thread_fps)
    seq = next(m for m in measurements if m.kind == "threads" and m.threads == full)
    par = [m.total_s - m.infer_s for m in measurements if m.kind == "replicas"]
    overhead = {"sequential": round(seq.total_s - seq.infer_s, 4)}
    if par:
        overhead["parallel"] = round(sum(par) / len(par), 4)
    startup = {}
    if seq.startup_s is not None:
        startup["sequential"] = seq.startup_s
    par_up = [m.startup_s for m in measurements if m.kind == "replicas" and m.startup_s is not None]  # fmt: skip
    if par_up:
        startup["parallel"] = round(sum(par_up) / len(par_up), 4)
    return MeasuredCost(cpu=cpu, cores=cores, thread_fps=thread_fps, concurrent_fps=concurrent,
                        overhead_s=overhead, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        startup_s=startup)  # fmt: skip


def predicted_speedup(
    cost: MeasuredCost | None, comp: Comparison, fps: float, chunk_frames: list[int] | None = None
) -> float | None:
    """Predicted sequential time / predicted parallel time for one comparison, with the
    plan's actual chunk sizes when known."""
    if cost is None:
        return None
    frames = sum(chunk_frames) if chunk_frames else max(1, round(comp.duration_s * fps))
    seq = cost.predict_s(frames, 1, 1)
    par = cost.predict_s(frames, comp.parallel.n_chunks, len(comp.parallel.models), chunk_frames)
    return round(seq / par, 4) if seq and par else None


def predicted_latency(
    cost: MeasuredCost | None, rc: RunConfig, keyframes: Keyframes,
    chunk_frames: list[int] | None = None,
) -> float | None:  # fmt: skip
    """Predicted first playable + stall (s from the job start) of one streamed configuration."""
    if cost is None:
        return None
    frames = sum(chunk_frames) if chunk_frames else max(1, round(rc.duration_s * keyframes.fps))
    played = cost.predict_playback(frames, rc.n_chunks, len(rc.models), keyframes, chunk_frames)
    return None if played is None else round(played.latency_s, 4)


def _pct(x: float) -> str:
    return f"{100 * x:+.0f} %"


def explain(report: CostReport | None, results: list[dict[str, Any]], cpu: str, cores: int) -> str:
    """The report's paragraph: why parallel wins or loses on this machine, from the figures.
    ``results``: per comparison {"key", "interval" (Interval | None), "predicted"} and,
    when known, "chunk_frames" (the plan's chunk sizes) and "replicas"."""
    if report is None or report.cost is None:
        why = report.busy if report and report.busy else "no comparison was measurable"
        return f"The cost model was not measured: {why}."
    c = report.cost
    one = min(c.thread_fps)
    full = max(c.thread_fps)
    f1, fn = c.thread_fps[one], c.thread_fps[full]
    parts = [f"On this machine ({cpu}, {cores} cores) one replica renders {f1:.1f} frames/s on "
             f"{one} thread{'s' if one > 1 else ''}"]  # fmt: skip
    if full != one:
        parts[0] += (f" and {fn:.1f} on {full}: {full} threads give {fn / f1:.2f}× one thread "
                     f"(a thread-scaling efficiency of {100 * fn / f1 / (full / one):.0f} %)")  # fmt: skip
    parts[0] += "."
    for k, fk in sorted(c.concurrent_fps.items()):
        gain = k * fk / fn
        parts.append(
            f"{k} replicas rendering at once reach {fk:.1f} frames/s each, {k * fk:.1f} together "
            f"— {gain:.2f}× one {full}-thread replica"
            + (
                ", so independent processes use the cores better than one process's threads do; "
                "that is the whole source of a parallel gain here."
                if gain > 1.03
                else ", so splitting the work costs throughput here (the replicas compete for the "
                "same cores, caches and memory bandwidth): parallel can only lose."
                if gain < 0.97
                else ", so splitting the work neither gains nor loses throughput: any parallel "
                "gain is bounded by a few percent."
            )  # fmt: skip
        )
    seq_o, par_o = c.overhead_s.get("sequential"), c.overhead_s.get("parallel")
    if seq_o is not None and par_o is not None:
        parts.append(
            f"Fixed costs per job (convert, face boxes, mel, merge) were {seq_o:.2f} s sequential "
            f"and {par_o:.2f} s parallel"
            + ("; the difference weighs most on short clips." if par_o > seq_o + 0.02 else ".")
        )
    uneven = [r for r in results if r.get("chunk_frames") and _busiest_share(r) > 1.05 / len(r["chunk_frames"])]  # fmt: skip
    if uneven:
        parts.append("The planner's cuts were uneven (silence snapping moves them to pauses): " + "; ".join(
            f"{r['key']}: chunks of {' + '.join(map(str, r['chunk_frames']))} frames, the busiest "
            f"replica renders {100 * _busiest_share(r):.0f} % of them" for r in uneven) + ".")  # fmt: skip
    rows = [r for r in results if r["interval"] is not None and r["predicted"] is not None]
    if rows:
        parts.append("Predicted vs measured speed-up: " + "; ".join(
            f"{r['key']}: {r['predicted']:.2f}× vs {r['interval'].text()} "
            f"(error {_pct(r['predicted'] / r['interval'].median - 1)})" for r in rows) + ".")  # fmt: skip
    parts.append(verdict(results))
    return " ".join(parts)


def _busiest_share(r: dict[str, Any]) -> float:
    """Share of the frames on the busiest replica (chunks placed by ``schedule``)."""
    frames, k = r["chunk_frames"], r.get("replicas") or len(r["chunk_frames"])
    return busiest_frames(frames, k) / max(1, sum(frames))


def verdict(results: list[dict[str, Any]]) -> str:
    ivs: list[Interval] = [r["interval"] for r in results if r["interval"] is not None]
    if not ivs:
        return "No comparison was measurable, so there is no verdict."
    wins = [
        r["key"] for r in results if r["interval"] and r["interval"].verdict == "parallel faster"
    ]
    loses = [
        r["key"] for r in results if r["interval"] and r["interval"].verdict == "parallel slower"
    ]
    best = max(ivs, key=lambda i: i.median)
    if wins and not loses:
        return (f"Verdict: parallel wins here ({', '.join(wins)}), by up to {best.median:.2f}× "
                "(median of the pairs); the intervals exclude 1.")  # fmt: skip
    if loses and not wins:
        return f"Verdict: parallel loses here ({', '.join(loses)}); the intervals exclude 1."
    if wins or loses:
        return (f"Verdict: parallel wins at {', '.join(wins) or 'no point'} and loses at "
                f"{', '.join(loses) or 'no point'}; elsewhere the difference is within the interval.")  # fmt: skip
    return ("Verdict: no clear difference — every interval contains 1, so on this machine "
            "parallel and sequential are the same speed within what was measured.")  # fmt: skip


def nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
