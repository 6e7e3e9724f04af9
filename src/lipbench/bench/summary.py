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
            "median_seq_first_s": _median(clean, "seq_first_playable_s"),
            "median_par_first_s": _median(clean, "par_first_playable_s"),
            "median_seq_stall_s": _median(clean, "seq_stall_s"),
            "median_par_stall_s": _median(clean, "par_stall_s"),
            "predicted_seq_latency_s": _first(g, "predicted_seq_latency_s"),
            "predicted_par_latency_s": _first(g, "predicted_par_latency_s"),
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


def _median(frame: pd.DataFrame, col: str) -> float:
    """Median of a column over the given (clean) rows; NaN when absent or empty (a bench
    from before streaming has no latency columns)."""
    if col not in frame or frame[col].isna().all():
        return math.nan
    return float(frame[col].median())


def _first(frame: pd.DataFrame, col: str) -> float:
    vals = frame[col].dropna() if col in frame else []
    return float(vals.iloc[0]) if len(vals) else math.nan


LATENCY_COLUMNS = [
    "bench_id", "duration_s", "strategy", "config", "models", "n_chunks", "runs", "frames",
    "streamed", "median_total_s", "median_first_s", "median_stall_s", "median_latency_s",
    "frames_per_s", "predicted_latency_s",
]  # fmt: skip


def latency_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per duration and strategy (each parallel configuration apart): medians over the runs of
    clean pairs of total time, first playable frame and stall (from each job's start), their
    sum (latency: what a viewer waits in all) and the throughput, frames / total time. A
    sequential run counts once even when several comparisons shared its duration."""
    clean = pairs[pairs["clean"].astype(bool)] if len(pairs) else pairs
    measured = ["seq_first_playable_s", "par_first_playable_s"]
    if not set(measured) <= set(pairs) or clean[measured].isna().all().all():
        return pd.DataFrame(columns=LATENCY_COLUMNS)  # no clean pair, or a bench from before
    sides = []
    for side, strategy in (("seq", "sequential"), ("par", "parallel")):
        part = clean.assign(
            strategy=strategy,
            config=clean["config"] if side == "par" else "sequential",
            models=clean["models"] if side == "par" else "",
            n_chunks=clean["n_chunks"] if side == "par" else 1,
            run_id=clean[f"{side}_run_id"], total_s=clean[f"{side}_total_s"],
            first_s=clean[f"{side}_first_playable_s"], stall_s=clean[f"{side}_stall_s"],
            predicted=clean[f"predicted_{side}_latency_s"],
        )  # fmt: skip
        sides.append(part.drop_duplicates("run_id"))
    runs = pd.concat(sides, ignore_index=True)
    rows = []
    keys = ["bench_id", "duration_s", "strategy", "config", "models", "n_chunks"]
    for key, g in runs.groupby(keys, sort=False):
        total, first, stall = (float(g[c].median()) for c in ("total_s", "first_s", "stall_s"))
        frames = int(g["frames"].iloc[0])
        pred = g["predicted"].dropna()
        rows.append({
            **dict(zip(keys, key, strict=True)), "runs": len(g), "frames": frames,
            "streamed": bool(g["streamed"].astype(bool).all()), "median_total_s": total,
            "median_first_s": first, "median_stall_s": stall,
            "median_latency_s": float((g["first_s"] + g["stall_s"]).median()),
            "frames_per_s": frames / total if total > 0 else math.nan,
            "predicted_latency_s": float(pred.iloc[0]) if len(pred) else math.nan,
        })  # fmt: skip
    out = pd.DataFrame(rows, columns=LATENCY_COLUMNS)
    return out.sort_values(["duration_s", "strategy", "n_chunks"], ascending=[True, False, True], kind="stable").reset_index(drop=True)  # fmt: skip


def format_latency(table: pd.DataFrame) -> str:
    """The printed latency block: one line per duration × strategy."""
    if table.empty or table["median_first_s"].isna().all():
        return ""
    head = (f"{'duration':>8}  {'strategy':<28} {'runs':>4}  {'total':>8}  {'frames/s':>8}  "
            f"{'first playable':>14}  {'stall':>7}  {'first + stall':>13}  {'predicted':>9}")  # fmt: skip
    lines = [head, "-" * len(head)]
    multi = table.loc[table["strategy"] == "parallel", "models"].nunique() > 1
    for r in table.itertuples():
        name = _name(r, multi)
        lines.append(
            f"{f'{r.duration_s:g} s':>8}  {name:<28} {r.runs:>4}  {_fmt(r.median_total_s, '.2f', ' s'):>8}  "
            f"{_fmt(r.frames_per_s, '.1f'):>8}  {_fmt(r.median_first_s, '.2f', ' s'):>14}  "
            f"{_fmt(r.median_stall_s, '.2f', ' s'):>7}  {_fmt(r.median_latency_s, '.2f', ' s'):>13}  "
            f"{_fmt(r.predicted_latency_s, '.2f', ' s'):>9}"
        )  # fmt: skip
    return "\n".join(lines)


def _name(r: Any, multi: bool) -> str:
    """A latency row's configuration, with its models when several parallel sets were run."""
    return r.config + (f" [{r.models}]" if multi and r.strategy == "parallel" else "")


def latency_text(table: pd.DataFrame, fps: float) -> str:
    """The trade-off in words, from the measured medians: per duration, which configuration
    shows its first frame soonest, which makes the viewer wait least in all (first playable
    + stall), which renders fastest — and whether the render kept up with playback."""
    t = table.dropna(subset=["median_first_s"])
    if t.empty:
        return "No latency was measured (no clean pair)."
    streamed = bool(t["streamed"].all())
    parts = [
        (
            "Latency counts from each job's start (the WAV given; TTS excluded); every "
            "comparison below is by the medians of the clean pairs' runs. "
            + (
                "Every run streamed: a segment plays as soon as it is listed, at the video's "
                f"{fps:g} frames/s, and waits (stalls) when the next one is not ready yet."
                if streamed
                else "The runs did not stream: nothing plays before the MP4 is finished, so the first "
                "playable frame is the total time and there is no stall."
            )
        )  # fmt: skip
    ]
    multi = t.loc[t["strategy"] == "parallel", "models"].nunique() > 1
    differ = []
    for d, g in t.groupby("duration_s", sort=True):
        fast, first, least = (g.loc[g[c].idxmin()] for c in ("median_total_s", "median_first_s", "median_latency_s"))  # fmt: skip
        each = "; ".join(
            f"{_name(r, multi)} plays after {r.median_first_s:.2f} s, stalls {r.median_stall_s:.2f} s, "
            f"renders {r.frames_per_s:.1f} frames/s (done at {r.median_total_s:.2f} s)"
            for r in g.itertuples()
        )  # fmt: skip
        verdict = (f"the first frame soonest: {_name(first, multi)}; the least waiting in all "
                   f"(first + stall, {least.median_latency_s:.2f} s): {_name(least, multi)}; the "
                   f"highest throughput: {_name(fast, multi)}")  # fmt: skip
        if _name(least, multi) != _name(fast, multi):
            differ.append(f"{d:g} s")
            verdict += " — here latency and throughput pick differently"
        parts.append(f"At {d:g} s of speech: {each}. So {verdict}.")
    parts.append(
        f"Latency and throughput pick differently at {', '.join(differ)}: there, plan.objective "
        "decides (latency for a viewer watching the stream, throughput for files made in bulk)."
        if differ
        else "Latency and throughput pick the same configuration at every duration measured."
    )
    best_rate = float(t["frames_per_s"].max())
    if streamed:
        if best_rate < fps:
            parts.append(
                f"No configuration rendered as fast as the video plays ({best_rate:.1f} < {fps:g} "
                "frames/s, fixed costs included), so every streamed run stalls: the stall grows "
                "with the clip, so on long clips the plan that finishes sooner tends to make the "
                "viewer wait less, on short ones the plan that starts sooner."
            )
        else:
            slow = t[t["frames_per_s"] < fps]
            parts.append(
                f"Rendering at up to {best_rate:.1f} frames/s, above the video's {fps:g}, lets a "
                "streamed run play without stalling once it has started"
                + (f" (below {fps:g} frames/s: {', '.join(sorted({_name(r, multi) for r in slow.itertuples()}))})" if len(slow) else "")
                + "; the first playable frame then decides the latency."
            )  # fmt: skip
        pred = t.dropna(subset=["predicted_latency_s"])
        if len(pred):
            err = (
                pred["predicted_latency_s"] / pred["median_latency_s"].clip(lower=1e-9) - 1
            ).abs()
            parts.append(
                "The cost model's predicted first playable + stall (what plan.objective: "
                f"latency minimises) was off the measured median by {100 * float(err.median()):.0f} % "
                f"(median over the rows above; worst {100 * float(err.max()):.0f} %)."
            )
    return " ".join(parts)


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
        lat = latency_table(pairs)
        block = format_latency(lat)
        if block:
            origin = "streamed runs" if g.stream else "plain runs (not streamed)"
            out += [f"latency from each job's start, {origin}; medians of the clean pairs' runs:",
                    block, "", latency_text(lat, float(first["plan"]["fps"]) if first else 25.0), ""]  # fmt: skip
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
