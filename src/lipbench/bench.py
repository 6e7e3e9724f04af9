"""`lipbench bench`: sequential vs parallel, measured in ONE process on warm replica pools.

One grid runner serves the CLI (``lipbench bench --suite strategies``) and the sweep notebook
(``notebooks/sweep.ipynb``):

1. Speech of exactly D seconds per duration: TTS once per duration (timed, but kept out of the
   strategy comparison), then cut — or looped — to D s and converted to 16 kHz.
2. Warm-up: every replica pool is started and runs two short noise clips before anything is
   timed (first inferences in a fresh process are slow); the second warm-up calibrates a small
   cost model, whose predicted speedup is written beside each measurement.
3. For repeat r, every (duration, strategy, chunk count) runs once, in a seeded shuffled order,
   so slow drift on a shared machine spreads over all configurations. (Replicas reset their
   per-job face caches when a new job arrives, so a repeat is rendered again, not replayed.)
4. Tidy CSV: one row per run × stage; sidecars ``<stem>.runs.jsonl`` (the full run records,
   for Gantt and utilisation charts), ``<stem>.speech.csv`` (TTS per duration) and
   ``<stem>.json`` (grid, machine, summary, decision per duration).

Speedup = median(sequential) / median(config) for the same duration, within the same bench.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import audio as audio_mod
from . import tts as tts_mod
from .atomic import write_text_atomic
from .errors import InputError, LipbenchError
from .jobs import STRATEGIES
from .pipeline import Workbench
from .plan import estimate_optimal_chunks
from .sysinfo import machine, versions

log = logging.getLogger("lipbench.bench")

# Read aloud by the built-in text source; cycled when a duration needs more speech.
BUILTIN_SENTENCES = [
    "Text becomes speech, and speech becomes a talking face, one frame at a time.",
    "Every frame of the video looks at a short window of the sound around it.",
    "The planner cuts the audio into chunks, and each chunk goes to its own replica.",
    "When the replicas finish, the chunks are joined and the sound is added once.",
    "On a small machine, two workers share the same two cores, so the gain may be small.",
    "That is why we measure, instead of guessing, and why we repeat every measurement.",
    "Short clips start quickly, while long clips spend most of their time in the model.",
    "The report compares the measured best choice with the rule of thumb from the seed.",
]
PIPER_CHARS_PER_S = 14.0  # rough speaking rate, only to decide how much text to synthesise
STAGES = ("convert", "detect", "split", "infer", "merge", "total")
COLUMNS = [
    "bench_id", "run_id", "repeat", "order", "duration_s", "audio_duration_s", "strategy",
    "config", "n_chunks", "models", "replicas", "threads_per_replica", "device", "cores",
    "cpu_model", "stage", "seconds", "frames", "render_fps", "weights", "weights_trained",
    "planner_chunks", "planner_pick", "predicted_speedup", "cpu_percent_mean", "peak_rss_mb",
    "load_before",
]  # fmt: skip
SPEECH_COLUMNS = ["duration_s", "source", "engine", "lang", "tts_s", "tts_speech_s", "looped"]
SEED_RULE_TEXT = "< 10 s: sequential (1 chunk); 10–30 s: 2 chunks; > 30 s: 2–4 chunks"


# ---------------------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """One cell of the grid: a duration and a way to render it."""

    duration_s: float
    strategy: str
    n_chunks: int
    models: tuple[str, ...]

    @property
    def label(self) -> str:
        if self.strategy == "sequential":
            return "sequential"
        return f"parallel {self.n_chunks} chunk{'s' if self.n_chunks != 1 else ''}"

    def run_id(self, repeat: int, tag_models: bool = False) -> str:
        d = f"{self.duration_s:g}".replace(".", "p")
        m = f"-{'+'.join(self.models)}" if tag_models else ""
        return f"d{d}s-{self.strategy}-c{self.n_chunks}{m}-r{repeat}"


@dataclass
class Grid:
    durations: list[float]
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    chunk_counts: list[int] | None = None  # parallel chunk counts; None = the planner's pick
    model_sets: list[list[str]] | None = None  # parallel replicas; None = config's
    repeats: int = 3
    seed: int = 0
    sequential_model: str | None = None  # None = first model of each set (or the config's)

    def validate(self) -> Grid:
        if not self.durations:
            raise InputError("no durations given", "e.g. --durations 5,10,20")
        bad = [d for d in self.durations if not (isinstance(d, int | float) and 0 < d <= 600)]
        if bad:
            raise InputError(
                f"durations must be seconds in (0, 600], got {bad}", "e.g. --durations 5,10,20"
            )
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise InputError(
                f"unknown strategies {unknown or '(none)'}", f"use {', '.join(STRATEGIES)}"
            )
        if self.chunk_counts is not None and (
            not self.chunk_counts or any(int(c) != c or c < 1 for c in self.chunk_counts)
        ):
            raise InputError(
                f"chunk counts must be integers ≥ 1, got {self.chunk_counts}", "e.g. --chunks 2,4"
            )
        if self.model_sets is not None and (
            not self.model_sets or any(not ms for ms in self.model_sets)
        ):
            raise InputError("every model set needs at least one model", "e.g. --models gan,nogan")
        if int(self.repeats) != self.repeats or self.repeats < 1:
            raise InputError(f"repeats must be ≥ 1, got {self.repeats}", "e.g. --repeats 3")
        return self


def planner_chunks(duration_s: float, replicas: int, cfg: dict[str, Any]) -> int:
    """What the configured planner would pick (1 = sequential)."""
    p = cfg["plan"]
    if p["policy"] == "fixed":
        return p["chunks"] if replicas > 1 else 1
    return estimate_optimal_chunks(
        duration_s, replicas, p["seconds_per_chunk"], p["min_parallel_s"], p["max_chunks"]
    )


def grid_configs(grid: Grid, cfg: dict[str, Any]) -> list[RunConfig]:
    """Every configuration once, in a stable order (sequential deduplicated per model)."""
    sets = grid.model_sets or [list(cfg["parallel"]["models"])]
    out: list[RunConfig] = []
    for d in grid.durations:
        for s in grid.strategies:
            for ms in sets:
                if s == "sequential":
                    model = grid.sequential_model or (
                        ms[0] if grid.model_sets else cfg["sequential"]["model"]
                    )
                    rc = RunConfig(float(d), s, 1, (model,))
                    if rc not in out:
                        out.append(rc)
                    continue
                counts = grid.chunk_counts or [planner_chunks(d, len(ms), cfg)]
                for c in counts:
                    rc = RunConfig(float(d), s, int(c), tuple(ms))
                    if rc not in out:
                        out.append(rc)
    return out


def run_order(configs: list[RunConfig], repeats: int, seed: int) -> list[tuple[int, RunConfig]]:
    """Interleaved schedule: each repeat runs every config once, in its own seeded order."""
    schedule = []
    for r in range(repeats):
        order = list(configs)
        random.Random(seed * 1000 + r).shuffle(order)
        schedule.extend((r, c) for c in order)
    return schedule


# ---------------------------------------------------------------------------------------
# Speech of an exact duration
# ---------------------------------------------------------------------------------------
@dataclass
class Speech:
    duration_s: float
    wav: Path
    source: str  # "builtin", a text file or an audio file
    engine: str | None
    lang: str | None
    tts_s: float | None  # synthesis wall time (None for an audio source)
    tts_speech_s: float  # length of what was synthesised (or of the audio file)
    looped: bool


def fit_length(samples: np.ndarray, n: int, fade: int = 320) -> np.ndarray:
    """Exactly ``n`` samples: cut, or loop the clip; a short fade-out hides the cut's click."""
    if len(samples) == 0:
        raise InputError("the speech source has no samples", "use another text or audio file")
    reps = math.ceil(n / len(samples))
    out = np.tile(samples, reps)[:n].astype(np.float32, copy=True)
    k = min(fade, n)
    out[n - k :] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
    return out


def _sentences_for(seconds: float, sentences: list[str]) -> str:
    """Enough sentences (cycled) for about ``seconds`` of speech, with a 15 % margin."""
    want = seconds * PIPER_CHARS_PER_S * 1.15
    picked: list[str] = []
    i = 0
    while sum(len(s) + 1 for s in picked) < want:
        picked.append(sentences[i % len(sentences)])
        i += 1
    return " ".join(picked)


def _source_kind(text_source: str) -> str:
    if text_source == "builtin":
        return "builtin"
    p = Path(text_source)
    if not p.is_file():
        raise InputError(
            f"text source not found: {text_source}",
            "use 'builtin', a .txt file of text, or an audio file",
        )
    return "text" if p.suffix.lower() in (".txt", ".md") else "audio"


def make_speech(
    durations: Iterable[float],
    workdir: str | os.PathLike,
    cfg: dict[str, Any],
    text_source: str = "builtin",
    lang: str | None = None,
    engine: str | None = None,
) -> dict[float, Speech]:
    """One 16 kHz WAV of exactly D s per duration under ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kind = _source_kind(text_source)
    lang = lang or cfg["text"]["lang"]
    out: dict[float, Speech] = {}
    if kind == "audio":
        wav = audio_mod.convert_to_wav16k(text_source, workdir / "source16k.wav", cfg["video"]["ffmpeg"])  # fmt: skip
        samples = audio_mod.read_wav(wav)
        for d in durations:
            n = round(d * audio_mod.SAMPLE_RATE)
            path = audio_mod.write_wav16k(workdir / f"speech_{d:g}s.wav", fit_length(samples, n))
            out[d] = Speech(d, path, text_source, None, None, None, len(samples) / audio_mod.SAMPLE_RATE, n > len(samples))  # fmt: skip
        return out
    if kind == "builtin":
        sentences = BUILTIN_SENTENCES
    else:
        text = Path(text_source).read_text(encoding="utf-8").strip()
        sentences = [s.strip() + "." for s in text.replace("\n", " ").split(".") if s.strip()]
        if not sentences:
            raise InputError(f"{text_source} has no text", "put a few sentences in it")
    concrete = tts_mod.resolve_engine(engine or cfg["tts"]["engine"], lang)
    # Load the voice once, untimed: the per-duration TTS times then compare like with like.
    tts_mod.synthesize(sentences[0], lang, workdir / f"tts_warmup{tts_mod.output_suffix(concrete)}", engine=concrete, max_chars=cfg["text"]["max_chars"], timeout_s=cfg["tts"]["timeout_s"])  # fmt: skip
    for d in durations:
        text = _sentences_for(d, sentences)
        raw = workdir / f"tts_{d:g}s{tts_mod.output_suffix(concrete)}"
        res = tts_mod.synthesize(text, lang, raw, engine=concrete, max_chars=cfg["text"]["max_chars"], timeout_s=cfg["tts"]["timeout_s"])  # fmt: skip
        wav16 = audio_mod.convert_to_wav16k(raw, workdir / f"tts_{d:g}s_16k.wav", cfg["video"]["ffmpeg"])  # fmt: skip
        samples = audio_mod.read_wav(wav16)
        n = round(d * audio_mod.SAMPLE_RATE)
        path = audio_mod.write_wav16k(workdir / f"speech_{d:g}s.wav", fit_length(samples, n))
        out[d] = Speech(d, path, text_source, res.engine, res.lang, round(res.seconds, 4), len(samples) / audio_mod.SAMPLE_RATE, n > len(samples))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------
# Cost model (calibrated on the warm-up jobs)
# ---------------------------------------------------------------------------------------
@dataclass
class CostModel:
    """Infer time = frames on the busiest replica / that replica's frame rate, plus the
    job's fixed overhead (convert, detect, mel, merge) — rates measured on warm-up jobs."""

    fps: float
    seq_fps: dict[str, float] = field(default_factory=dict)  # sequential model → frames/s
    par_fps: dict[tuple[str, ...], float] = field(default_factory=dict)  # per replica, concurrent
    overhead_s: dict[str, float] = field(default_factory=dict)  # per strategy

    def predict_s(self, rc: RunConfig) -> float | None:
        frames = max(1, round(rc.duration_s * self.fps))
        over = self.overhead_s.get(rc.strategy, 0.0)
        if rc.strategy == "sequential":
            rate = self.seq_fps.get(rc.models[0])
            return frames / rate + over if rate else None
        if rc.n_chunks == 1:  # the pipeline renders a single chunk on one full replica
            rate = self.seq_fps.get(rc.models[0])
            return frames / rate + over if rate else None
        rate = self.par_fps.get(rc.models)
        if not rate:
            return None
        per_replica = math.ceil(rc.n_chunks / len(rc.models))
        busiest = frames * per_replica / rc.n_chunks
        return busiest / rate + over

    def predicted_speedup(self, rc: RunConfig, baseline: RunConfig | None) -> float | None:
        if baseline is None:
            return None
        a, b = self.predict_s(baseline), self.predict_s(rc)
        return round(a / b, 3) if a and b else None


def calibrate(model: CostModel, rc: RunConfig, rec: dict[str, Any]) -> None:
    infer = rec["timings"]["infer"] or 1e-9
    if rc.strategy == "sequential":
        model.seq_fps[rc.models[0]] = rec["frames"] / infer
    else:  # every replica rendered one chunk at the same time: the mean per-replica rate
        rates = [c["frames"] / max(c["wall_s"], 1e-9) for c in rec["chunks"]]
        model.par_fps[rc.models] = float(np.mean(rates))
    model.overhead_s[rc.strategy] = rec["timings"]["total"] - infer


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
@dataclass
class BenchResult:
    bench_id: str
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    speech: dict[float, Speech]
    cost_model: CostModel | None
    files: dict[str, str]
    weights_trained: bool
    weights_note: str | None

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)


def sidecar_paths(csv_path: str | os.PathLike) -> dict[str, Path]:
    """The files a bench writes, all beside its CSV."""
    p = Path(csv_path)
    return {
        "csv": p,
        "runs": p.with_name(f"{p.stem}.runs.jsonl"),
        "speech": p.with_name(f"{p.stem}.speech.csv"),
        "summary": p.with_name(f"{p.stem}.json"),
        "workdir": p.parent / "runs" / p.stem,
    }


def _noise_wav(path: Path, frames: int, fps: float, seed: int) -> Path:
    n = max(1, round(frames * audio_mod.SAMPLE_RATE / fps))
    noise = np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1
    return audio_mod.write_wav16k(path, noise)


class _Runner:
    """Wraps a Workbench: warm-up and measured runs, all on audio files."""

    def __init__(self, wb: Workbench, workdir: Path, say: Callable[[str], None]):
        self.wb = wb
        self.workdir = workdir
        self.say = say
        self.fps = float(wb.cfg["fps"])
        self._noise = 0

    def generate(self, rc: RunConfig, out: Path, wav: Path, chunks: int | None) -> dict[str, Any]:
        return self.wb.generate(
            out / "result.mp4",
            audio=wav,
            strategy=rc.strategy,
            models=list(rc.models),
            chunks=chunks,
            progress=False,
        ).to_dict()

    def warm_up(self, rc: RunConfig, model: CostModel) -> None:
        """Start the pool and run two noise clips (2 s); the second calibrates the cost model."""
        t0 = time.perf_counter()
        chunks = len(rc.models) if rc.strategy == "parallel" else None
        for _ in range(2):
            self._noise += 1
            wav = _noise_wav(self.workdir / "warmup.wav", round(2 * self.fps), self.fps, self._noise)  # fmt: skip
            rec = self.generate(rc, self.workdir / "warmup", wav, chunks)
        calibrate(model, RunConfig(2.0, rc.strategy, chunks or 1, rc.models), rec)
        self.say(
            f"warm-up {rc.strategy} [{'+'.join(rc.models)}]: pool ready, "
            f"{rec['render_fps']} frames/s on 2 s of noise ({time.perf_counter() - t0:.1f} s)"
        )


def _rows_for(
    bench_id: str,
    run_id: str,
    repeat: int,
    order: int,
    rc: RunConfig,
    rec: dict[str, Any],
    predicted: float | None,
    load_before: float,
    planned: int,
) -> list[dict[str, Any]]:
    """Tidy rows (one per stage) for one run record; ``planned`` is the planner's chunk
    count for this duration (1 = it would run sequentially)."""
    pick = (planned == 1 and rc.strategy == "sequential") or (
        planned > 1 and rc.strategy == "parallel" and rc.n_chunks == planned
    )
    mach = rec["machine"]
    peak = [r.get("peak_rss_mb") for r in rec["replicas"] if r.get("peak_rss_mb")]
    base = {
        "bench_id": bench_id,
        "run_id": run_id,
        "repeat": repeat,
        "order": order,
        "duration_s": rc.duration_s,
        "audio_duration_s": round(rec["audio_duration_s"], 4),
        "strategy": rc.strategy,
        "config": rc.label,
        "n_chunks": rec["plan"]["n_chunks"],
        "models": "+".join(rc.models),
        "replicas": len(rec["replicas"]),
        "threads_per_replica": rec["threads_per_replica"],
        "device": rec["device"],
        "cores": mach["cores"],
        "cpu_model": mach["cpu"],
        "frames": rec["frames"],
        "render_fps": rec["render_fps"],
        "weights": "file" if rec["weights_trained"] else "seeded-random",
        "weights_trained": rec["weights_trained"],
        "planner_chunks": planned,
        "planner_pick": pick,
        "predicted_speedup": predicted,
        "cpu_percent_mean": (rec.get("cpu") or {}).get("cpu_percent_mean"),
        "peak_rss_mb": max(peak) if peak else None,
        "load_before": round(load_before, 2),
    }
    return [{**base, "stage": s, "seconds": rec["timings"].get(s)} for s in STAGES]


def planner_for(rc: RunConfig, grid: Grid, cfg: dict[str, Any]) -> int:
    """The planner's chunk count at this run's duration, for the replicas the parallel
    strategy has here: a sequential run is compared with the grid's first model set."""
    if rc.strategy == "parallel":
        return planner_chunks(rc.duration_s, len(rc.models), cfg)
    sets = grid.model_sets or [list(cfg["parallel"]["models"])]
    return planner_chunks(rc.duration_s, len(sets[0]), cfg)


def _baseline(rc: RunConfig, configs: list[RunConfig]) -> RunConfig | None:
    seqs = [c for c in configs if c.strategy == "sequential" and c.duration_s == rc.duration_s]
    same = [c for c in seqs if c.models[0] == rc.models[0]]
    return (same or seqs or [None])[0]


def run_grid(
    cfg: dict[str, Any],
    grid: Grid,
    csv_path: str | os.PathLike,
    text_source: str = "builtin",
    lang: str | None = None,
    warmup: bool = True,
    say: Callable[[str], None] = print,
    workbench: Workbench | None = None,
) -> BenchResult:
    """Run the whole grid and write the CSV + sidecars (rewritten after every run, so an
    interrupted bench keeps what it measured). Returns everything that was written."""
    grid.validate()
    paths = sidecar_paths(csv_path)
    workdir = paths["workdir"]
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    bench_id = time.strftime("%Y%m%d-%H%M%S")
    configs = grid_configs(grid, cfg)
    schedule = run_order(configs, grid.repeats, grid.seed)
    tag = len({c.models for c in configs if c.strategy == "parallel"}) > 1

    say(f"speech: {len(grid.durations)} duration(s) from {text_source} …")
    speech = make_speech(grid.durations, workdir / "speech", cfg, text_source, lang)
    for sp in speech.values():
        if sp.tts_s is not None:
            say(f"  {sp.duration_s:g} s: {sp.engine} synthesised {sp.tts_speech_s:.1f} s of speech in {sp.tts_s:.2f} s{' (looped)' if sp.looped else ''}")  # fmt: skip

    own = workbench is None
    wb = workbench or Workbench(cfg)
    result = BenchResult(bench_id, [], [], speech, None, {k: str(v) for k, v in paths.items()}, True, None)  # fmt: skip
    try:
        runner = _Runner(wb, workdir, say)
        model = CostModel(fps=float(cfg["fps"]))
        if warmup:
            seen: set[tuple[str, tuple[str, ...]]] = set()
            for rc in configs:
                if (rc.strategy, rc.models) not in seen:
                    seen.add((rc.strategy, rc.models))
                    runner.warm_up(rc, model)
            result.cost_model = model
        for i, (rep, rc) in enumerate(schedule):
            run_id = rc.run_id(rep, tag)
            load = os.getloadavg()[0]
            rec = runner.generate(rc, workdir / run_id, speech[rc.duration_s].wav, rc.n_chunks if rc.strategy == "parallel" else None)  # fmt: skip
            pred = model.predicted_speedup(rc, _baseline(rc, configs)) if warmup else None
            result.rows.extend(_rows_for(bench_id, run_id, rep, i, rc, rec, pred, load, planner_for(rc, grid, cfg)))  # fmt: skip
            result.runs.append({"bench_id": bench_id, "run_id": run_id, "repeat": rep, "order": i, "config": rc.label, **asdict(rc), "record": rec})  # fmt: skip
            if not rec["weights_trained"]:
                result.weights_trained, result.weights_note = False, rec["weights_note"]
            t = rec["timings"]
            say(f"[{i + 1}/{len(schedule)}] {run_id}: total {t['total']:.2f} s, infer {t['infer']:.2f} s, {rec['render_fps']} frames/s")  # fmt: skip
            write_outputs(result, cfg, grid, text_source)
    finally:
        if own:
            wb.close()
        shutil.rmtree(workdir / "warmup", ignore_errors=True)  # noise clips, not results
    if not result.rows:
        raise LipbenchError("the bench ran nothing", "check the grid")
    return result


# ---------------------------------------------------------------------------------------
# Summaries (shared by the CLI table and the report notebook)
# ---------------------------------------------------------------------------------------
def _q(s: pd.Series, q: float) -> float:
    return float(s.quantile(q)) if len(s) else float("nan")


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per duration × config (× models): medians, spread, frames/s and speedup vs the
    sequential run of the same duration in the same bench."""
    keys = ["bench_id", "duration_s", "strategy", "config", "n_chunks", "models"]
    wide = df.pivot_table(
        index=[*keys, "run_id"], columns="stage", values="seconds", aggfunc="first"
    ).reset_index()
    extra = df.groupby("run_id", as_index=False).agg(
        frames=("frames", "first"),
        planner_chunks=("planner_chunks", "first"),
        planner_pick=("planner_pick", "first"),
        predicted_speedup=("predicted_speedup", "first"),
    )
    wide = wide.merge(extra, on="run_id")
    g = wide.groupby(keys, sort=False)
    out = g.agg(
        runs=("run_id", "count"),
        frames=("frames", "first"),
        median_total_s=("total", "median"),
        min_total_s=("total", "min"),
        max_total_s=("total", "max"),
        median_infer_s=("infer", "median"),
        planner_chunks=("planner_chunks", "first"),
        planner_pick=("planner_pick", "first"),
        predicted_speedup=("predicted_speedup", "first"),
    ).reset_index()
    out["iqr_total_s"] = g["total"].apply(lambda s: _q(s, 0.75) - _q(s, 0.25)).to_numpy()
    out["frames_per_s"] = out["frames"] / out["median_infer_s"]
    seq = out[out.strategy == "sequential"]
    base = seq.groupby(["bench_id", "duration_s"])[["median_total_s", "median_infer_s"]].first()
    joined = out.join(base.add_suffix("_seq"), on=["bench_id", "duration_s"])
    out["speedup_total"] = joined["median_total_s_seq"] / joined["median_total_s"]
    out["speedup_infer"] = joined["median_infer_s_seq"] / joined["median_infer_s"]
    out["chunks"] = out["n_chunks"].where(out.strategy == "parallel", 1)
    return out.sort_values(["bench_id", "duration_s", "strategy", "n_chunks"], ascending=[True, True, False, True]).reset_index(drop=True)  # fmt: skip


def seed_rule(duration_s: float) -> str:
    """The seed's decision tree, as the chunk count(s) it recommends."""
    if duration_s < 10:
        return "1"
    if duration_s <= 30:
        return "2"
    return "2–4"


def seed_rule_agrees(duration_s: float, chunks: int) -> bool:
    lo, _, hi = seed_rule(duration_s).partition("–")
    return int(lo) <= chunks <= int(hi or lo)


def decision_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per duration: the measured best configuration, the seed's rule, the planner's pick,
    and how much slower the planner's pick was than the best (when it was measured)."""
    rows = []
    for (bench, d), grp in summary.groupby(["bench_id", "duration_s"], sort=True):
        best = grp.loc[grp["median_total_s"].idxmin()]
        planned = int(grp["planner_chunks"].max())
        picked = grp[grp["planner_pick"].astype(bool)]
        slower = (
            float(picked["median_total_s"].iloc[0] / best["median_total_s"] - 1)
            if len(picked)
            else float("nan")
        )
        rows.append(
            {
                "bench_id": bench,
                "duration_s": d,
                "best_config": best["config"],
                "best_chunks": int(best["chunks"]),
                "best_median_total_s": round(float(best["median_total_s"]), 3),
                "seed_rule_chunks": seed_rule(d),
                "seed_rule_agrees": seed_rule_agrees(d, int(best["chunks"])),
                "planner_chunks": planned,
                "planner_measured": bool(len(picked)),
                "planner_slower_than_best": round(slower, 4),
                "planner_chunk_error": planned - int(best["chunks"]),
            }
        )
    return pd.DataFrame(rows)


def _fmt(x: Any, spec: str, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:{spec}}{suffix}"


def format_table(summary: pd.DataFrame) -> str:
    """The printed table: one line per duration × config."""
    head = f"{'duration':>8}  {'config':<20} {'runs':>4}  {'median total':>12}  {'min–max':>13}  {'median infer':>12}  {'frames/s':>8}  {'speedup':>7}  {'infer sp.':>9}  {'predicted':>9}  planner"  # fmt: skip
    lines = [head, "-" * len(head)]
    tag = summary.loc[summary.strategy == "parallel", "models"].nunique() > 1
    for r in summary.itertuples():
        rng = f"{r.min_total_s:.2f}–{r.max_total_s:.2f}"
        lines.append(
            f"{r.duration_s:>7g}s  {r.config + (f' [{r.models}]' if tag and r.strategy == 'parallel' else ''):<20} {r.runs:>4}  "
            f"{_fmt(r.median_total_s, '.2f', ' s'):>12}  {rng:>13}  {_fmt(r.median_infer_s, '.2f', ' s'):>12}  "
            f"{_fmt(r.frames_per_s, '.1f'):>8}  {_fmt(r.speedup_total, '.2f', '×'):>7}  {_fmt(r.speedup_infer, '.2f', '×'):>9}  "
            f"{_fmt(r.predicted_speedup, '.2f', '×'):>9}  {'← pick' if r.planner_pick else ''}"
        )  # fmt: skip
    return "\n".join(lines)


def format_decisions(decisions: pd.DataFrame) -> str:
    lines = [f"best per duration (seed rule: {SEED_RULE_TEXT}):"]
    for r in decisions.itertuples():
        planner = f"planner picked {r.planner_chunks} chunk(s)"
        if r.planner_measured:
            planner += f", {r.planner_slower_than_best * 100:+.1f} % vs best"
        lines.append(
            f"  {r.duration_s:>5g} s: best = {r.best_config} ({r.best_median_total_s:.2f} s); "
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


# ---------------------------------------------------------------------------------------
# Report helpers (notebooks/report.ipynb draws these frames)
# ---------------------------------------------------------------------------------------
def add_series(df: pd.DataFrame) -> pd.DataFrame:
    """A ``series`` column naming each configuration for plot legends (models added only
    when the bench compared several parallel model sets)."""
    df = df.copy()
    multi = df.loc[df.strategy == "parallel", "models"].nunique() > 1
    df["series"] = df["config"]
    if multi:
        par = df.strategy == "parallel"
        df.loc[par, "series"] = df.loc[par, "config"] + " [" + df.loc[par, "models"] + "]"
    return df


def run_speedups(df: pd.DataFrame, stage: str = "total") -> pd.DataFrame:
    """One row per run: its ``stage`` seconds and its speedup = median sequential (same bench
    and duration) / this run — the spread behind the median speedup."""
    runs = add_series(df[df.stage == stage]).rename(columns={"seconds": stage})
    seq = runs[runs.strategy == "sequential"].groupby(["bench_id", "duration_s"])[stage].median()
    runs = runs.join(seq.rename("sequential_median"), on=["bench_id", "duration_s"])
    runs["speedup"] = runs["sequential_median"] / runs[stage]
    return runs.reset_index(drop=True)


def stage_table(df: pd.DataFrame, speech: pd.DataFrame | None = None) -> pd.DataFrame:
    """Median seconds per stage for each duration × configuration, in pipeline order, with the
    TTS time of that duration's speech (measured once per duration, the same for every
    strategy) and detect + mel/plan folded into "split" as in the seed's table."""
    med = (
        add_series(df)
        .groupby(["duration_s", "series", "strategy", "n_chunks", "stage"], sort=False)["seconds"]
        .median()
        .unstack("stage")
        .reset_index()
    )
    out = med[["duration_s", "series", "strategy", "n_chunks"]].copy()
    tts = speech.set_index("duration_s")["tts_s"] if speech is not None and len(speech) else None
    out["tts"] = out["duration_s"].map(tts) if tts is not None else float("nan")
    out["convert"] = med["convert"]
    out["split"] = med["detect"] + med["split"]
    out["infer"] = med["infer"]
    out["merge"] = med["merge"]
    out["total"] = med["total"]
    return out.sort_values(["duration_s", "strategy", "n_chunks"], ascending=[True, False, True]).reset_index(drop=True)  # fmt: skip


def _typical(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run whose total time is nearest its configuration's median."""
    if not runs:
        return None
    med = float(np.median([r["record"]["timings"]["total"] for r in runs]))
    return min(runs, key=lambda r: abs(r["record"]["timings"]["total"] - med))


def showcase_runs(runs: list[dict[str, Any]]) -> tuple[dict | None, dict | None]:
    """The pair the Gantt and utilisation charts show, at the longest duration: a typical
    sequential run, and a typical run of the fastest parallel configuration (by median)."""
    if not runs:
        return None, None
    longest = max(r["duration_s"] for r in runs)
    at = [r for r in runs if r["duration_s"] == longest]
    seq = _typical([r for r in at if r["strategy"] == "sequential"])
    by_config: dict[str, list[dict[str, Any]]] = {}
    for r in at:
        if r["strategy"] == "parallel":
            by_config.setdefault(f"{r['config']}|{'+'.join(r['models'])}", []).append(r)
    if not by_config:
        return seq, None
    fastest = min(
        by_config.values(),
        key=lambda rs: float(np.median([r["record"]["timings"]["total"] for r in rs])),
    )
    return seq, _typical(fastest)


def gantt_rows(run: dict[str, Any]) -> pd.DataFrame:
    """Per chunk: which replica rendered it, when (s from the start of infer), how many frames."""
    rows = [
        {
            "run_id": run["run_id"],
            "replica": c["replica"],
            "model": c["model"],
            "chunk": c.get("chunk", i),
            "frames": c["frames"],
            "start_s": c["start_offset_s"],
            "end_s": c["end_offset_s"],
            "fps": c["fps"],
        }
        for i, c in enumerate(run["record"]["chunks"])
    ]
    return pd.DataFrame(rows)


def usage_frame(run: dict[str, Any]) -> pd.DataFrame:
    """Long frame of the run's resource samples: t, system CPU %, and RSS per replica."""
    rec = run["record"]
    names = {
        str(r["pid"]): f"replica {r['replica']} ({r['model']})"
        for r in rec["replicas"]
        if r.get("pid")
    }
    rows = []
    for smp in (rec.get("cpu") or {}).get("samples", []):
        for key, val in smp.items():
            if key.startswith("rss_mb_"):
                pid = key.removeprefix("rss_mb_")
                rows.append({"t": smp["t"], "replica": names.get(pid, f"pid {pid}"), "rss_mb": val, "cpu_percent": smp["cpu_percent"]})  # fmt: skip
    return pd.DataFrame(rows, columns=["t", "replica", "rss_mb", "cpu_percent"])


def as_list(value: Any, cast: Callable[[Any], Any] = lambda x: x) -> list[Any]:
    """A notebook parameter as a list: a list stays, a scalar becomes [x], a string is YAML
    ("[5, 10]") or a comma list ("5,10")."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import yaml

            value = yaml.safe_load(text)
        else:
            value = [t.strip() for t in text.split(",") if t.strip()]
    if not isinstance(value, list | tuple):
        value = [value]
    return [cast(v) for v in value]


def as_model_sets(value: Any) -> list[list[str]]:
    """Model sets: [["gan", "nogan"]], ["gan", "nogan"] (one set), or "gan+nogan;gan+gan"."""
    if isinstance(value, str) and not value.strip().startswith("["):
        return [[m for m in part.replace(",", "+").split("+") if m] for part in value.split(";")]
    sets = as_list(value)
    if sets and all(isinstance(m, str) for m in sets):
        return [list(sets)]
    return [as_list(ms, str) for ms in sets]


# ---------------------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------------------
def write_outputs(
    result: BenchResult, cfg: dict[str, Any], grid: Grid, text_source: str
) -> dict[str, Path]:
    paths = sidecar_paths(result.files["csv"])
    df = result.frame
    write_text_atomic(paths["csv"], df.to_csv(index=False))
    lines = [json.dumps(r, default=_json_default, ensure_ascii=False) for r in result.runs]
    write_text_atomic(paths["runs"], "\n".join(lines) + "\n")
    sp = pd.DataFrame([_speech_row(s) for s in result.speech.values()], columns=SPEECH_COLUMNS)
    write_text_atomic(paths["speech"], sp.to_csv(index=False))
    summary = summarize(df) if len(df) else pd.DataFrame()
    doc = {
        "bench_id": result.bench_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "grid": asdict(grid),
        "text_source": text_source,
        "device": df["device"].iloc[0] if len(df) else None,
        "weights_trained": result.weights_trained,
        "weights_note": result.weights_note,
        "machine": machine(),
        "versions": versions(),
        "plan_config": cfg["plan"],
        "seed_rule": SEED_RULE_TEXT,
        "cost_model": _cost_model_doc(result.cost_model),
        "speech": sp.to_dict(orient="records"),
        "summary": summary.to_dict(orient="records"),
        "decisions": decision_table(summary).to_dict(orient="records") if len(summary) else [],
        "files": {k: str(v) for k, v in paths.items()},
    }
    write_text_atomic(
        paths["summary"],
        json.dumps(doc, indent=2, default=_json_default, ensure_ascii=False) + "\n",
    )
    return paths


def _speech_row(s: Speech) -> dict[str, Any]:
    return {k: getattr(s, k) for k in SPEECH_COLUMNS}


def _cost_model_doc(model: CostModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    return {
        "note": "calibrated on the second warm-up job of each pool (2 s of noise)",
        "seq_fps": model.seq_fps,
        "par_fps_per_replica": {"+".join(k): v for k, v in model.par_fps.items()},
        "overhead_s": model.overhead_s,
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o)}")


def load_runs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The run records a bench wrote (``<stem>.runs.jsonl``)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def find_root(start: str | os.PathLike | None = None) -> Path:
    """Where a notebook should work: ``start`` (default: cwd), except that a notebook opened
    in JupyterLab runs in ``notebooks/``, whose parent is the checkout: then the parent.
    So "results/…" means the same from JupyterLab and from papermill run at the root."""
    here = Path(start or Path.cwd()).resolve()
    if here.name == "notebooks" and (here.parent / "config" / "config.yaml").is_file():
        return here.parent
    return here


def run_sweep(
    durations: Any,
    chunk_counts: Any = None,
    strategies: Any = ("sequential", "parallel"),
    model_sets: Any = None,
    repeats: int = 2,
    device: str | None = "auto",
    text_source: str = "builtin",
    lang: str | None = None,
    output: str | os.PathLike = "results/bench/sweep.csv",
    config: str | None = None,
    seed: int | None = None,
    warmup: bool = True,
    say: Callable[[str], None] = print,
) -> BenchResult:
    """The sweep notebook's entry point: notebook-style parameters → ``run_grid``.
    ``chunk_counts`` None (or "planner") = the planner's pick per duration."""
    from .config import load_config

    cfg = load_config(config or None, {"device": device} if device else None)
    planner = chunk_counts is None or (isinstance(chunk_counts, str) and chunk_counts.strip() in ("", "planner"))  # fmt: skip
    grid = Grid(
        durations=as_list(durations, float),
        strategies=as_list(strategies, str),
        chunk_counts=None if planner else as_list(chunk_counts, int),
        model_sets=as_model_sets(model_sets) if model_sets else None,
        repeats=int(repeats),
        seed=cfg["seed"] if seed is None else int(seed),
    )
    return run_grid(cfg, grid, output, text_source, lang, warmup=warmup, say=say)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def parse_list(text: str | None, cast: Callable[[str], Any], what: str) -> list[Any] | None:
    if text is None:
        return None
    try:
        items = [cast(t.strip()) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise InputError(f"cannot read {what} from {text!r}", "give a comma list, e.g. 5,10,20") from None  # fmt: skip
    if not items:
        raise InputError(f"no {what} in {text!r}", "give a comma list, e.g. 5,10,20")
    return items


def grid_from_args(args: argparse.Namespace, cfg: dict[str, Any]) -> Grid:
    models = parse_list(args.models, str, "models")
    return Grid(
        durations=parse_list(args.durations, float, "durations") or [],
        strategies=parse_list(args.strategies, str, "strategies") or [],
        chunk_counts=parse_list(args.chunks, int, "chunk counts"),
        model_sets=[models] if models else None,
        repeats=args.repeats,
        seed=cfg["seed"],
    ).validate()


def main(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    if getattr(args, "suite", "strategies") == "speed":
        try:
            from .speedbench import main as speed_main
        except ImportError as exc:
            raise LipbenchError(
                f"the speed suite is not available ({exc})", "use --suite strategies"
            ) from exc
        return speed_main(args, cfg)
    grid = grid_from_args(args, cfg)
    csv_path = Path(args.out) / "strategies.csv"
    result = run_grid(cfg, grid, csv_path, text_source="builtin", say=print)
    summary = summarize(result.frame)
    first = result.rows[0]
    print()
    print(f"lipbench bench — strategies suite, bench {result.bench_id}")
    print(f"machine: {first['cores']} cores, {first['cpu_model']}; device {first['device']}")
    threads = {r["config"]: r["threads_per_replica"] for r in result.rows}
    print("torch threads per replica: " + ", ".join(f"{k} {v}" for k, v in threads.items()))
    print(weights_banner(result.weights_trained))
    tts_s = [s for s in result.speech.values() if s.tts_s is not None]
    if tts_s:
        print("TTS (not in the times below): " + ", ".join(f"{s.duration_s:g} s → {s.tts_s:.2f} s" for s in tts_s))  # fmt: skip
    print("times in seconds, wall clock per job (convert → detect → mel/plan → infer → merge);")
    print("speedup = median sequential / median config at the same duration, in this run\n")
    print(format_table(summary))
    print()
    print(format_decisions(decision_table(summary)))
    print()
    paths = sidecar_paths(csv_path)
    print(f"wrote {paths['csv']} ({len(result.rows)} rows), {paths['summary']}, {paths['runs']}, {paths['speech']}")  # fmt: skip
    return 0
