"""What a bench measured, and the files it writes beside its CSV:

- ``<stem>.csv``: tidy, one row per timed run × stage (contaminated runs included, flagged
  ``clean = False``, so nothing measured is hidden — summaries use clean pairs only), with
  the run's latency beside its stages: ``first_playable_s`` and ``stall_s`` from the job's
  start (a streamed run: its first segment and playback at the video's fps; a plain run:
  its finished MP4, no stall);
- ``<stem>.pairs.csv``: one row per (sequential, parallel) pair with its speed-up and both
  runs' latency;
- ``<stem>.runs.jsonl``: every run's full record (for Gantt and utilisation charts);
- ``<stem>.speech.csv``: TTS time per duration (kept out of the comparison);
- ``<stem>.json``: grid, protocol, machine, cost model, summary, decisions, verdict.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .contamination import Contamination, describe_busy
from .costmodel import CostReport
from .grid import Comparison, Grid, RunConfig
from .speech import Speech
from .stats import Interval, interval, pair_ratio

BENCH_MARKER = ".lipbench-bench"  # in a bench's workdir: its records are not "real jobs"
STAGES = ("convert", "detect", "split", "infer", "merge", "total")
COLUMNS = [
    "bench_id", "run_id", "comparison", "pair", "position", "order", "duration_s",
    "audio_duration_s", "strategy", "config", "n_chunks", "models", "replicas",
    "threads_per_replica", "device", "cores", "cpu_model", "stage", "seconds", "frames",
    "render_fps", "weights", "weights_trained", "clean", "others_pct", "steal_pct",
    "cpu_percent_mean", "peak_rss_mb", "load_before", "streamed", "first_playable_s",
    "stall_s", "latency_origin",
]  # fmt: skip
PAIR_COLUMNS = [
    "bench_id", "comparison", "duration_s", "config", "n_chunks", "models", "pair",
    "sequential_first", "seq_run_id", "par_run_id", "seq_total_s", "par_total_s",
    "seq_infer_s", "par_infer_s", "speedup", "speedup_infer", "clean", "seq_others_pct",
    "par_others_pct", "status", "predicted_speedup", "planner_chunks", "planner_pick",
    "chunk_frames", "frames", "streamed", "seq_first_playable_s", "par_first_playable_s",
    "seq_stall_s", "par_stall_s", "predicted_seq_latency_s", "predicted_par_latency_s",
]  # fmt: skip


@dataclass
class TimedRun:
    run_id: str
    rc: RunConfig
    order: int  # place in the bench's timeline
    record: dict[str, Any]  # RunRecord.to_dict()
    contamination: Contamination
    clean: bool
    load_before: float

    @property
    def total(self) -> float:
        return float(self.record["timings"]["total"])

    @property
    def infer(self) -> float:
        return float(self.record["timings"]["infer"])

    @property
    def first_playable(self) -> float | None:
        """Job start → first playable frame (None in a record from before streaming)."""
        return self.record["timings"].get("first_playable_s")

    @property
    def stall(self) -> float | None:
        return self.record["timings"].get("stall_s")

    @property
    def streamed(self) -> bool:
        return bool(self.record.get("stream"))


@dataclass
class Pair:
    index: int  # attempt number within its comparison
    sequential_first: bool
    seq: TimedRun
    par: TimedRun

    @property
    def clean(self) -> bool:
        return self.seq.clean and self.par.clean

    @property
    def ratio(self) -> float:
        return pair_ratio(self.seq.total, self.par.total)

    @property
    def ratio_infer(self) -> float:
        return pair_ratio(self.seq.infer, self.par.infer)


@dataclass
class Measured:
    """One comparison and every pair tried for it."""

    comparison: Comparison
    key: str
    planner_chunks: int
    pairs: list[Pair] = field(default_factory=list)
    status: str | None = None  # why it stopped: target | cap | reruns
    predicted: float | None = None
    # the cost model's first playable + stall per strategy (streamed benches only)
    predicted_latency: dict[str, float | None] = field(default_factory=dict)

    @property
    def clean_pairs(self) -> list[Pair]:
        return [p for p in self.pairs if p.clean]

    @property
    def ratios(self) -> list[float]:
        return [p.ratio for p in self.clean_pairs]

    def interval(self, min_pairs: int) -> Interval | None:
        return interval(self.ratios) if len(self.ratios) >= min_pairs else None

    @property
    def chunk_frames(self) -> list[int] | None:
        """The parallel plan's chunk sizes, as the planner cut this comparison's speech."""
        if not self.pairs:
            return None
        return [c["n_frames"] for c in self.pairs[0].par.record["plan"]["chunks"]]

    @property
    def planner_pick(self) -> bool:
        return self.planner_chunks == self.comparison.parallel.n_chunks


@dataclass
class BenchResult:
    bench_id: str
    grid: Grid
    measured: list[Measured]
    runs: list[TimedRun]
    speech: dict[float, Speech]
    cost: CostReport | None
    files: dict[str, str]
    weights_trained: bool = True
    weights_note: str | None = None

    @property
    def measurable(self) -> bool:
        return bool(self.measured) and all(
            m.interval(self.grid.min_pairs) is not None for m in self.measured
        )

    def busy_reason(self) -> str:
        return describe_busy([r.contamination for r in self.runs], self.grid.max_contamination)


def sidecar_paths(csv_path: str | os.PathLike) -> dict[str, Path]:
    """The files a bench writes, all beside its CSV."""
    p = Path(csv_path)
    return {
        "csv": p,
        "pairs": p.with_name(f"{p.stem}.pairs.csv"),
        "runs": p.with_name(f"{p.stem}.runs.jsonl"),
        "speech": p.with_name(f"{p.stem}.speech.csv"),
        "summary": p.with_name(f"{p.stem}.json"),
        "workdir": p.parent / "runs" / p.stem,
    }


def run_rows(result: BenchResult) -> pd.DataFrame:
    """Tidy rows: one per timed run × stage."""
    where = {id(p.seq): (m.key, p.index, 0 if p.sequential_first else 1) for m in result.measured for p in m.pairs}  # fmt: skip
    where.update({id(p.par): (m.key, p.index, 1 if p.sequential_first else 0) for m in result.measured for p in m.pairs})  # fmt: skip
    rows = []
    for run in result.runs:
        rec, rc = run.record, run.rc
        comp, pair, pos = where.get(id(run), ("", -1, -1))
        peak = [r["peak_rss_mb"] for r in rec["replicas"] if r.get("peak_rss_mb")]
        base = {
            "bench_id": result.bench_id, "run_id": run.run_id, "comparison": comp, "pair": pair,
            "position": pos, "order": run.order, "duration_s": rc.duration_s,
            "audio_duration_s": round(rec["audio_duration_s"], 4), "strategy": rc.strategy,
            "config": rc.label, "n_chunks": rec["plan"]["n_chunks"], "models": "+".join(rc.models),
            "replicas": len(rec["replicas"]), "threads_per_replica": rec["threads_per_replica"],
            "device": rec["device"], "cores": rec["machine"]["cores"],
            "cpu_model": rec["machine"]["cpu"], "frames": rec["frames"],
            "render_fps": rec["render_fps"],
            "weights": "file" if rec["weights_trained"] else "seeded-random",
            "weights_trained": rec["weights_trained"], "clean": run.clean,
            "others_pct": round(100 * run.contamination.foreign_share, 2),
            "steal_pct": round(100 * run.contamination.steal_share, 2),
            "cpu_percent_mean": rec["cpu"].get("cpu_percent_mean"),
            "peak_rss_mb": max(peak) if peak else None, "load_before": round(run.load_before, 2),
            "streamed": run.streamed, "first_playable_s": run.first_playable, "stall_s": run.stall,
            "latency_origin": rec["timings"].get("latency_origin"),
        }  # fmt: skip
        rows.extend({**base, "stage": s, "seconds": rec["timings"][s]} for s in STAGES)
    return pd.DataFrame(rows, columns=COLUMNS)


def pair_rows(result: BenchResult) -> pd.DataFrame:
    rows = []
    for m in result.measured:
        par = m.comparison.parallel
        for p in m.pairs:
            rows.append({
                "bench_id": result.bench_id, "comparison": m.key, "duration_s": par.duration_s,
                "config": par.label, "n_chunks": par.n_chunks, "models": "+".join(par.models),
                "pair": p.index, "sequential_first": p.sequential_first,
                "seq_run_id": p.seq.run_id, "par_run_id": p.par.run_id,
                "seq_total_s": p.seq.total, "par_total_s": p.par.total,
                "seq_infer_s": p.seq.infer, "par_infer_s": p.par.infer,
                "speedup": round(p.ratio, 5), "speedup_infer": round(p.ratio_infer, 5),
                "clean": p.clean,
                "seq_others_pct": round(100 * p.seq.contamination.share, 2),
                "par_others_pct": round(100 * p.par.contamination.share, 2),
                "status": m.status, "predicted_speedup": m.predicted,
                "planner_chunks": m.planner_chunks, "planner_pick": m.planner_pick,
                "chunk_frames": "+".join(map(str, m.chunk_frames or [])),
                "frames": p.par.record["frames"], "streamed": p.seq.streamed and p.par.streamed,
                "seq_first_playable_s": p.seq.first_playable, "par_first_playable_s": p.par.first_playable,
                "seq_stall_s": p.seq.stall, "par_stall_s": p.par.stall,
                "predicted_seq_latency_s": m.predicted_latency.get("sequential"),
                "predicted_par_latency_s": m.predicted_latency.get("parallel"),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def run_entries(result: BenchResult) -> list[dict[str, Any]]:
    """The runs.jsonl lines: identity, contamination and the full record of each run."""
    return [
        {"bench_id": result.bench_id, "run_id": r.run_id, "order": r.order, "config": r.rc.label,
         "duration_s": r.rc.duration_s, "strategy": r.rc.strategy, "n_chunks": r.rc.n_chunks,
         "models": list(r.rc.models), "clean": r.clean,
         "contamination": r.contamination.to_dict(), "record": r.record}
        for r in result.runs
    ]  # fmt: skip


def load_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The run entries a bench wrote (``<stem>.runs.jsonl``)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o)}")


def dumps(data: Any) -> str:
    """JSON with NaN written as null (pandas frames carry NaN for "not measured")."""
    return json.dumps(_nan_free(data), indent=2, default=json_default, ensure_ascii=False) + "\n"


def _nan_free(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _nan_free(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_free(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x
