"""Writing a bench's files (`results` lists them) and publishing its cost model for the
``measured`` plan policy."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import pandas as pd

from ..atomic import write_text_atomic
from ..plan import SEED_RULE_TEXT
from ..request import cost_model_path
from ..sysinfo import machine, versions
from .costmodel import explain
from .results import BenchResult, dumps, pair_rows, run_entries, run_rows, sidecar_paths
from .speech import SPEECH_COLUMNS, speech_row
from .stats import CI_LEVEL, EXACT_MAX, RESAMPLES
from .summary import decision_table, explain_rows, latency_table, latency_text, summarize


def protocol(result: BenchResult) -> dict[str, Any]:
    g = result.grid
    return {
        "pairs": "sequential and parallel back to back, order alternating; speed-up per pair = sequential s / parallel s (WAV → MP4, TTS excluded)",
        "latency": "first playable frame and stall time from each job's start (streamed: first segment listed, playback at the video's fps; plain: the finished MP4, no stall); medians over the runs of clean pairs",
        "min_pairs": g.min_pairs,
        "max_pairs": g.max_pairs,
        "ci_target": g.ci_target,
        "ci_level": CI_LEVEL,
        "bootstrap": f"percentile bootstrap of the median: exact for n ≤ {EXACT_MAX}, else {RESAMPLES} seeded resamples",
        "max_contamination": g.max_contamination,
        "contamination": "CPU time of processes outside the run's process tree + steal, as a share of wall time × cores (/proc/stat)",
        "reruns": g.reruns,
    }  # fmt: skip


def explanation(result: BenchResult, summary: pd.DataFrame) -> str:
    m = machine()
    return explain(result.cost, explain_rows(summary), m["cpu"], int(m["cores"] or 1))


def write_outputs(result: BenchResult, cfg: dict[str, Any], text_source: str) -> None:
    paths = sidecar_paths(result.files["csv"])
    paths["csv"].parent.mkdir(parents=True, exist_ok=True)
    runs = run_rows(result)
    pairs = pair_rows(result)
    write_text_atomic(paths["csv"], runs.to_csv(index=False))
    write_text_atomic(paths["pairs"], pairs.to_csv(index=False))
    lines = [dumps(e).replace("\n", "") for e in run_entries(result)]
    # No run yet (a bench that failed while warming up): no file — an empty one cannot be
    # written atomically, and that error would hide the bench's own.
    if lines:
        write_text_atomic(paths["runs"], "".join(line + "\n" for line in lines))
    else:
        paths["runs"].unlink(missing_ok=True)
    sp = pd.DataFrame([speech_row(s) for s in result.speech.values()], columns=SPEECH_COLUMNS)
    write_text_atomic(paths["speech"], sp.to_csv(index=False))
    g = result.grid
    summary = summarize(pairs, g.min_pairs, g.ci_target) if len(pairs) else pd.DataFrame()
    decisions = decision_table(summary) if len(summary) else pd.DataFrame()
    latency = latency_table(pairs)
    doc = {
        "bench_id": result.bench_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "grid": asdict(g),
        "protocol": protocol(result),
        "text_source": text_source,
        "device": runs["device"].iloc[0] if len(runs) else None,
        "weights_trained": result.weights_trained,
        "weights_note": result.weights_note,
        "machine": machine(),
        "versions": versions(),
        "plan_config": cfg["plan"],
        "seed_rule": SEED_RULE_TEXT,
        "measurable": result.measurable,
        "busy": None if result.measurable else result.busy_reason(),
        "cost_model": result.cost.to_dict() if result.cost else None,
        "explanation": explanation(result, summary) if result.cost else None,
        "speech": sp.to_dict(orient="records"),
        "summary": summary.to_dict(orient="records"),
        "decisions": decisions.to_dict(orient="records"),
        "stream": g.stream,
        "fps": float(cfg["fps"]),
        "latency": latency.to_dict(orient="records"),
        "latency_text": latency_text(latency, float(cfg["fps"])) if len(latency) else None,
        "files": {k: str(v) for k, v in paths.items()},
        "published_cost_model": str(cost_model_path(cfg["results_dir"]))
        if result.cost and result.cost.cost
        else None,
    }
    write_text_atomic(paths["summary"], dumps(doc))
    if result.cost and result.cost.cost:
        write_text_atomic(cost_model_path(cfg["results_dir"]), dumps(result.cost.cost.to_dict()))
