"""Helpers for the notebooks (no torch: the report and explore kernels start fast): read a
bench's files back and shape them for the report's figures; find the newest real job for
explore. The sweep notebook runs ``runner.run_sweep``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..record import RunRecord, read_record
from .results import BENCH_MARKER, load_runs, sidecar_paths


def find_root(start: str | os.PathLike | None = None) -> Path:
    """Where a notebook should work: ``start`` (default: cwd), except that a notebook opened
    in JupyterLab runs in ``notebooks/``, whose parent is the checkout: then the parent.
    So "results/…" means the same from JupyterLab and from papermill run at the root."""
    here = Path(start or Path.cwd()).resolve()
    if here.name == "notebooks" and (here.parent / "config" / "config.yaml").is_file():
        return here.parent
    return here


@dataclass
class BenchFiles:
    """One or more benches read back from their files (the report's input)."""

    runs: pd.DataFrame  # tidy, one row per timed run × stage
    pairs: pd.DataFrame
    entries: list[dict[str, Any]]  # runs.jsonl
    speech: pd.DataFrame | None
    meta: list[dict[str, Any]]  # the <stem>.json of each bench

    @property
    def clean_runs(self) -> pd.DataFrame:
        """Runs of clean pairs only: what every median and chart uses."""
        ok = self.pairs[self.pairs["clean"].astype(bool)]
        ids = set(ok["seq_run_id"]) | set(ok["par_run_id"])
        return self.runs[self.runs["run_id"].isin(ids)]


def load_bench(csv_paths: list[Path]) -> BenchFiles:
    sides = [sidecar_paths(p) for p in csv_paths]
    runs = pd.concat([pd.read_csv(p) for p in csv_paths], ignore_index=True)
    pairs = pd.concat([pd.read_csv(s["pairs"]) for s in sides], ignore_index=True)
    entries = [e for s in sides if s["runs"].is_file() for e in load_runs(s["runs"])]
    sp = [pd.read_csv(s["speech"]) for s in sides if s["speech"].is_file()]
    meta = [json.loads(s["summary"].read_text(encoding="utf-8")) for s in sides]
    return BenchFiles(runs, pairs, entries, pd.concat(sp, ignore_index=True) if sp else None, meta)


def stage_table(runs: pd.DataFrame, speech: pd.DataFrame | None = None) -> pd.DataFrame:
    """Median seconds per stage for each duration × configuration (pass clean runs), with
    the TTS time of that duration's speech (measured once, the same for every strategy) and
    detect + mel/plan folded into "split" as in the seed's table."""
    med = (
        runs.groupby(["duration_s", "config", "strategy", "n_chunks", "stage"], sort=False)[
            "seconds"
        ]
        .median()
        .unstack("stage")
        .reset_index()
    )
    out = med[["duration_s", "config", "strategy", "n_chunks"]].copy()
    tts = speech.set_index("duration_s")["tts_s"] if speech is not None and len(speech) else None
    out["tts"] = out["duration_s"].map(tts) if tts is not None else float("nan")
    out["convert"] = med["convert"]
    out["split"] = med["detect"] + med["split"]
    out["infer"] = med["infer"]
    out["merge"] = med["merge"]
    out["total"] = med["total"]
    counts = runs.groupby(["duration_s", "config"])["run_id"].nunique().rename("runs")
    out = out.join(counts, on=["duration_s", "config"])
    return out.sort_values(["duration_s", "strategy", "n_chunks"], ascending=[True, False, True]).reset_index(drop=True)  # fmt: skip


def add_series(frame: pd.DataFrame) -> pd.DataFrame:
    """A ``series`` column naming each parallel configuration for legends (models added only
    when the bench compared several parallel model sets)."""
    frame = frame.copy()
    multi = frame["models"].nunique() > 1
    frame["series"] = frame["config"] + (" [" + frame["models"] + "]" if multi else "")
    return frame


def latency_frame(files: BenchFiles) -> pd.DataFrame:
    """``summary.latency_table`` of the benches' pairs (clean ones only), with a ``series``
    column for legends (models named only when several parallel model sets were run)."""
    from .summary import latency_table

    lat = latency_table(files.pairs)
    multi = lat.loc[lat["strategy"] == "parallel", "models"].nunique() > 1
    lat["series"] = [
        c + (f" [{m}]" if multi and s == "parallel" else "")
        for c, m, s in zip(lat["config"], lat["models"], lat["strategy"], strict=True)
    ]
    return lat


def typical_pair(files: BenchFiles, summary: pd.DataFrame) -> dict[str, Any] | None:
    """ONE clean pair, for the Gantt and utilisation charts: at the longest measurable
    duration, the comparison with the highest median speed-up, and of its clean pairs the one
    whose speed-up is nearest that median — a typical pair, its two runs side by side.
    Returns {"pair": its pairs.csv row, "median": the comparison's median, "seq", "par"}."""
    meas = summary[summary["measurable"].astype(bool)]
    if meas.empty:
        return None
    at = meas[meas["duration_s"] == meas["duration_s"].max()]
    comp = at.loc[at["speedup"].idxmax()]
    pairs = files.pairs[(files.pairs["comparison"] == comp["comparison"]) & files.pairs["clean"].astype(bool)]  # fmt: skip
    pick = pairs.iloc[int(np.argmin(np.abs(pairs["speedup"].to_numpy() - comp["speedup"])))]
    by_id = {e["run_id"]: e for e in files.entries}
    seq, par = by_id.get(pick["seq_run_id"]), by_id.get(pick["par_run_id"])
    if seq is None or par is None:
        return None
    return {"pair": pick.to_dict(), "median": float(comp["speedup"]), "seq": seq, "par": par}


def gantt_rows(run: dict[str, Any]) -> pd.DataFrame:
    """Per chunk: which replica rendered it, when (s from the start of infer), how many frames."""
    rows = [
        {"run_id": run["run_id"], "replica": c["replica"], "model": c["model"], "chunk": c["chunk"],
         "frames": c["frames"], "start_s": c["start_offset_s"], "end_s": c["end_offset_s"], "fps": c["fps"]}
        for c in run["record"]["chunks"]
    ]  # fmt: skip
    return pd.DataFrame(rows)


def usage_frame(run: dict[str, Any]) -> pd.DataFrame:
    """Long frame of the run's resource samples: t, system CPU %, and RSS per replica."""
    rec = run["record"]
    names = {str(r["pid"]): f"replica {r['replica']} ({r['model']})" for r in rec["replicas"]}
    rows = []
    for smp in rec["cpu"].get("samples", []):
        for key, val in smp.items():
            if key.startswith("rss_mb_"):
                pid = key.removeprefix("rss_mb_")
                rows.append({"t": smp["t"], "replica": names.get(pid, f"pid {pid}"), "rss_mb": val, "cpu_percent": smp["cpu_percent"]})  # fmt: skip
    return pd.DataFrame(rows, columns=["t", "replica", "rss_mb", "cpu_percent"])


def replica_table(run: dict[str, Any]) -> pd.DataFrame:
    """Per replica of a run: the peak of the RSS samples drawn in the chart (this run) beside
    the process's lifetime high-water mark (VmHWM, which includes earlier jobs and loading)."""
    rec = run["record"]
    usage = usage_frame(run)
    rows = []
    for r in rec["replicas"]:
        name = f"replica {r['replica']} ({r['model']})"
        sampled = usage.loc[usage["replica"] == name, "rss_mb"]
        gpu = [c["gpu_max_mem_mb"] for c in rec["chunks"] if c["replica"] == r["replica"] and c.get("gpu_max_mem_mb")]  # fmt: skip
        rows.append({
            "run": run["run_id"], "replica": name, "threads": r["render"]["threads"], "device": r["device"],
            "mean system CPU %": rec["cpu"].get("cpu_percent_mean"),
            "peak RSS in this run (sampled, MiB)": float(sampled.max()) if len(sampled) else None,
            "lifetime peak RSS (VmHWM, MiB)": r.get("peak_rss_mb"),
            "GPU peak memory (MiB)": max(gpu) if gpu else None,
        })  # fmt: skip
    return pd.DataFrame(rows)


def newest_record(root: str | os.PathLike = "results") -> Path | None:
    """The newest record of a real job under ``root``: ``<name>.run.json`` (CLI, server) or
    ``<job>/run.json`` (workflow) whose video exists — not a bench's runs, not a staging
    folder."""
    root = Path(root)
    if not root.is_dir():
        return None
    benches = {p.parent for p in root.rglob(BENCH_MARKER)}
    found = []
    for p in [*root.rglob("*.run.json"), *root.rglob("run.json")]:
        if any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            continue  # a staging folder
        if any(b == p.parent or b in p.parents for b in benches):
            continue
        try:
            rec: RunRecord = read_record(p)
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if Path(rec.outputs.video).is_file():
            found.append(p)
    return max(found, key=lambda p: p.stat().st_mtime, default=None)
