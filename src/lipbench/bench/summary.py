"""Tables and text from a bench's pairs: the CLI prints them and the report draws them, so
both show the same numbers. Only clean pairs enter a median or an interval."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..plan import SEED_RULE_TEXT, seed_rule_label, seed_rule_range
from .costmodel import explain
from .results import BenchResult, pair_rows
from .stats import CI_LEVEL, Interval, interval

NOT_MEASURABLE = "not measurable: the machine was busy"


def summarize(pairs: pd.DataFrame, min_pairs: int, ci_target: float) -> pd.DataFrame:
    """One row per comparison: clean pairs, median speed-up and its interval (NaN when fewer
    than ``min_pairs`` clean pairs), why the repeats stopped, prediction and its error."""
    rows = []
    for (bench, comp), g in pairs.groupby(["bench_id", "comparison"], sort=False):
        clean = g[g["clean"].astype(bool)]
        n = len(clean)
        iv = interval(list(clean["speedup"])) if n >= min_pairs else None
        ivi = interval(list(clean["speedup_infer"])) if n >= min_pairs else None
        first = g.iloc[0]
        pred = first["predicted_speedup"]
        pred = None if pred is None or pd.isna(pred) else float(pred)
        rows.append({
            "bench_id": bench, "comparison": comp, "duration_s": float(first["duration_s"]),
            "config": first["config"], "n_chunks": int(first["n_chunks"]),
            "models": first["models"], "pairs": n, "attempts": len(g),
            "contaminated": len(g) - n, "measurable": iv is not None,
            "speedup": iv.median if iv else math.nan, "ci_low": iv.low if iv else math.nan,
            "ci_high": iv.high if iv else math.nan, "ci_rel_width": iv.rel_width if iv else math.nan,
            "speedup_infer": ivi.median if ivi else math.nan,
            "median_seq_s": float(clean["seq_total_s"].median()) if n else math.nan,
            "median_par_s": float(clean["par_total_s"].median()) if n else math.nan,
            "status": first["status"] if isinstance(first["status"], str) else "running",
            "target_met": bool(iv and iv.rel_width <= ci_target),
            "verdict": iv.verdict if iv else NOT_MEASURABLE,
            "predicted_speedup": pred if pred is not None else math.nan,
            "prediction_error": pred / iv.median - 1 if iv and pred is not None else math.nan,
            "planner_chunks": int(first["planner_chunks"]),
            "planner_pick": bool(first["planner_pick"]),
            "chunk_frames": first["chunk_frames"] if isinstance(first["chunk_frames"], str) else "",
            "replicas": len(str(first["models"]).split("+")),
        })  # fmt: skip
    return pd.DataFrame(rows)


def decision_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per duration: the measured best (by median speed-up; sequential = 1.0), whether it is
    clear of the noise (its interval excludes 1), the seed's rule and the planner's pick."""
    rows = []
    for (bench, d), grp in summary.groupby(["bench_id", "duration_s"], sort=True):
        meas = grp[grp["measurable"].astype(bool)]
        planned = int(grp["planner_chunks"].max())
        row: dict[str, Any] = {
            "bench_id": bench, "duration_s": d, "seed_rule_chunks": seed_rule_label(d),
            "planner_chunks": planned,
        }  # fmt: skip
        if meas.empty:
            rows.append({**row, "best_config": "not measurable", "best_chunks": math.nan,
                         "best_speedup": math.nan, "clear": False, "seed_rule_agrees": math.nan,
                         "planner_measured": False, "planner_slower_than_best": math.nan})  # fmt: skip
            continue
        top = meas.loc[meas["speedup"].idxmax()]
        par_best = top["speedup"] > 1
        best_speed = float(top["speedup"]) if par_best else 1.0
        best_chunks = int(top["n_chunks"]) if par_best else 1
        clear = bool(top["ci_low"] > 1) if par_best else bool((meas["ci_high"] < 1).all())
        lo, hi = seed_rule_range(d)
        picked = meas[meas["n_chunks"] == planned]
        planner_speed = 1.0 if planned == 1 else (float(picked["speedup"].iloc[0]) if len(picked) else math.nan)  # fmt: skip
        rows.append({
            **row, "best_config": top["config"] if par_best else "sequential",
            "best_chunks": best_chunks, "best_speedup": best_speed, "clear": clear,
            "seed_rule_agrees": lo <= best_chunks <= hi,
            "planner_measured": not math.isnan(planner_speed),
            "planner_slower_than_best": best_speed / planner_speed - 1,
        })  # fmt: skip
    return pd.DataFrame(rows)


def _fmt(x: Any, spec: str, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:{spec}}{suffix}"


def stop_text(r: Any, max_pairs: int, ci_target: float) -> str:
    """Why a comparison has the pairs it has, for the table."""
    if not r.measurable:
        return f"{NOT_MEASURABLE} ({r.pairs} clean of {r.attempts} pairs)"
    if r.status == "target":
        return f"interval < {100 * ci_target:g} % of the median"
    if r.status == "cap":
        return f"cap of {max_pairs} pairs reached; interval {100 * r.ci_rel_width:.0f} % > target {100 * ci_target:g} %"  # fmt: skip
    if r.status == "reruns":
        return f"re-run budget spent ({r.contaminated} contaminated); interval {100 * r.ci_rel_width:.0f} %"  # fmt: skip
    return str(r.status)


def format_table(summary: pd.DataFrame, max_pairs: int, ci_target: float) -> str:
    """The printed table: one line per comparison."""
    head = (f"{'comparison':<28} {'pairs':>7}  {'sequential':>10}  {'parallel':>9}  "
            f"{'speed-up [95 % CI]':<22} {'infer':>6}  {'predicted':>9}  {'error':>6}  why it stopped")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in summary.itertuples():
        sp = (
            f"{r.speedup:.2f}× [{r.ci_low:.2f}, {r.ci_high:.2f}]"
            if r.measurable
            else "not measurable"
        )
        pick = " ← planner" if r.planner_pick else ""
        lines.append(
            f"{r.comparison + pick:<28} {f'{r.pairs}/{r.attempts}':>7}  {_fmt(r.median_seq_s, '.2f', ' s'):>10}  "
            f"{_fmt(r.median_par_s, '.2f', ' s'):>9}  {sp:<22} {_fmt(r.speedup_infer, '.2f', '×'):>6}  "
            f"{_fmt(r.predicted_speedup, '.2f', '×'):>9}  {_fmt(100 * r.prediction_error, '+.0f', ' %'):>6}  "
            f"{stop_text(r, max_pairs, ci_target)}"
        )  # fmt: skip
    return "\n".join(lines)


def format_decisions(decisions: pd.DataFrame) -> str:
    lines = [f"best per duration (seed rule: {SEED_RULE_TEXT}):"]
    for r in decisions.itertuples():
        if r.best_config == "not measurable":
            lines.append(f"  {r.duration_s:>5g} s: not measurable; seed rule {r.seed_rule_chunks}; planner {r.planner_chunks}")  # fmt: skip
            continue
        planner = f"planner picks {r.planner_chunks} chunk(s)"
        if r.planner_measured:
            planner += f", {r.planner_slower_than_best * 100:+.1f} % vs best"
        noise = "" if r.clear else " (within the noise)"
        lines.append(
            f"  {r.duration_s:>5g} s: best = {r.best_config} ({r.best_speedup:.2f}×){noise}; "
            f"seed rule {r.seed_rule_chunks}; {planner}"
        )
    return "\n".join(lines)


def weights_banner(trained: bool) -> str:
    if trained:
        return "weights: real checkpoints from weights/ (sha256 in each run record)"
    return (
        "WEIGHTS: SEEDED-RANDOM — no checkpoint in weights/, so the networks are untrained. "
        "The timings are representative (same network, same work); the lip-sync is not."
    )


def explain_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """The summary's figures as ``costmodel.explain`` reads them."""
    return [
        {"key": r.comparison, "replicas": r.replicas,
         "interval": Interval(r.pairs, r.speedup, r.ci_low, r.ci_high) if r.measurable else None,
         "predicted": None if pd.isna(r.predicted_speedup) else float(r.predicted_speedup),
         "chunk_frames": [int(x) for x in r.chunk_frames.split("+")] if r.chunk_frames else None}
        for r in summary.itertuples()
    ]  # fmt: skip


def format_report(result: BenchResult) -> str:
    """What `lipbench bench` prints after the runs: setup, protocol, table, decisions, the
    cost model's explanation and the files."""
    g = result.grid
    pairs = pair_rows(result)
    summary = summarize(pairs, g.min_pairs, g.ci_target) if len(pairs) else pd.DataFrame()
    first = result.runs[0].record if result.runs else None
    out = [f"lipbench bench — strategies, bench {result.bench_id}"]
    if first:
        m = first["machine"]
        out.append(f"machine: {m['cores']} cores, {m['cpu']}; device {first['device']}")
        threads = {r.rc.label: r.record["threads_per_replica"] for r in result.runs}
        out.append(
            "torch threads per replica: " + ", ".join(f"{k} {v}" for k, v in threads.items())
        )
    out.append(weights_banner(result.weights_trained))
    tts = [s for s in result.speech.values() if s.tts_s is not None]
    if tts:
        out.append("TTS (not in the times below): " + ", ".join(f"{s.duration_s:g} s → {s.tts_s:.2f} s" for s in tts))  # fmt: skip
    bad = sum(not r.clean for r in result.runs)
    out += [
        "protocol: pairs of back-to-back runs (WAV → MP4), order alternating; speed-up per pair = "
        f"sequential s / parallel s; median of the clean pairs with a {100 * CI_LEVEL:g} % bootstrap interval; "
        f"{g.min_pairs}–{g.max_pairs} clean pairs, stopping once the interval is < {100 * g.ci_target:g} % of the median",
        f"contamination: {bad} of {len(result.runs)} timed runs had other processes (plus steal) over "
        f"{100 * g.max_contamination:g} % of the machine; they are in the CSV but in no median (re-run budget {g.reruns} per comparison)",
        "",
    ]  # fmt: skip
    if len(summary):
        out += [format_table(summary, g.max_pairs, g.ci_target), "", format_decisions(decision_table(summary)), ""]  # fmt: skip
    if result.cost is not None:
        m = first["machine"] if first else {"cpu": "?", "cores": 0}
        out += [
            "why: " + explain(result.cost, explain_rows(summary), m["cpu"], int(m["cores"])),
            "",
        ]
    files = result.files
    out.append(f"wrote {files['csv']} ({len(result.runs)} runs), {files['pairs']}, {files['summary']}, {files['runs']}"
               + (f"; cost model → {files['cost_model']} (plan.policy: measured reads it)" if "cost_model" in files else ""))  # fmt: skip
    return "\n".join(out)
