"""Running a bench on warm replica pools, in one process:

1. speech of exactly D s per duration (TTS timed once per duration, kept out of the times);
2. warm-up: every pool renders a noise clip before anything is timed;
3. pairs: for each comparison, a sequential and a parallel run back to back, the order
   alternating from pair to pair; comparisons take turns in a seeded order. Each timed run
   is checked for contamination (`contamination.watch`); a pair with a contaminated run is
   kept in the files, left out of every median, and re-run — at most ``reruns`` times per
   comparison. A comparison stops when its interval is narrow enough, at ``max_pairs``
   clean pairs, or when its re-run budget is spent;
4. the cost model, measured on the same warm pools (skipped when nothing was measurable).

Every run is one job that streams by default (``sweep.stream``), so its record carries the
latency a viewer would see — first playable frame and stall time — counted from that job's
start (origin "job start"), beside its total time.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import load_config
from ..pipeline import Workbench
from ..request import cost_model_path
from .contamination import Contamination, describe_busy, watch
from .costmodel import (
    CostMeasurement,
    CostReport,
    fit,
    predicted_latency,
    predicted_speedup,
    thread_counts,
)
from .grid import Grid, RunConfig, as_list, as_model_sets, comparisons, planner_for
from .outputs import write_outputs
from .results import BENCH_MARKER, BenchResult, Measured, Pair, TimedRun, sidecar_paths
from .speech import make_speech, noise_wav
from .stats import stop_reason

Say = Callable[[str], None]


class Runner:
    """Timed and untimed runs on one Workbench, for one bench."""

    def __init__(self, wb: Workbench, workdir: Path, grid: Grid, result: BenchResult, say: Say,
                 cfg: dict[str, Any]):  # fmt: skip
        self.wb, self.workdir, self.grid, self.result, self.say = wb, workdir, grid, result, say
        self.cfg = cfg  # the bench's own sections (sweep) and the grid's model sets
        self.fps = wb.settings.fps
        self._noise = 0

    def generate(self, rc: RunConfig, wav: Path, out_dir: Path, threads: int | None = None) -> dict[str, Any]:  # fmt: skip
        # Latency counts from this job's start, not the bench's: each run is one job.
        req = self.wb.request(out_dir / "result.mp4", audio=wav, strategy=rc.strategy,
                              models=list(rc.models), chunks=rc.chunks, threads=threads,
                              progress=False, stream=self.grid.stream,
                              origin=(time.time(), "job start"))  # fmt: skip
        rec = self.wb.generate(req).to_dict()
        if not rec["weights_trained"]:
            self.result.weights_trained, self.result.weights_note = False, rec["weights_note"]
        return rec

    def timed(self, rc: RunConfig, wav: Path, run_id: str, threads: int | None = None) -> TimedRun:
        load = os.getloadavg()[0]
        with watch() as reading:
            rec = self.generate(rc, wav, self.workdir / run_id, threads)
        cont = reading.value
        assert cont is not None
        order = len(self.result.runs)
        return TimedRun(run_id, rc, order, rec, cont, cont.clean(self.grid.max_contamination), load)

    def noise(self, seconds: float, silent_at: list[float] | None = None) -> Path:
        self._noise += 1
        path = self.workdir / "noise" / f"noise_{self._noise}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        return noise_wav(path, seconds, self._noise, self.fps, silent_at or [])

    def warm_up(self, configs: list[RunConfig], threads: int | None = None) -> None:
        """One untimed noise clip per configuration (first inferences in a fresh process are
        slow; it also starts the pool)."""
        for rc in configs:
            t0 = time.perf_counter()
            rec = self.generate(
                rc, self.noise(self.grid.warmup_s), self.workdir / "warmup", threads
            )
            self.say(f"warm-up {rc.label} [{'+'.join(rc.models)}]{f' {threads} thread(s)' if threads else ''}: "
                     f"{rec['render_fps']} frames/s ({time.perf_counter() - t0:.1f} s)")  # fmt: skip

    def pair(self, m: Measured, index: int, tag: int) -> Pair:
        seq_first = index % 2 == 0
        wav = self.result.speech[m.comparison.duration_s].wav
        sides = [m.comparison.sequential, m.comparison.parallel]
        runs = {}
        for rc in sides if seq_first else sides[::-1]:
            run = self.timed(rc, wav, f"c{tag}-{rc.run_id(index)}")
            self.result.runs.append(run)
            runs[rc.strategy] = run
        return Pair(index, seq_first, runs["sequential"], runs["parallel"])

    def pairs(self, write: Callable[[], None]) -> None:
        """Pairs until every comparison has stopped (see the module's docstring)."""
        g = self.grid
        active = list(enumerate(self.result.measured))
        rng = random.Random(g.seed)
        while active:
            rng.shuffle(active)
            for tag, m in list(active):
                p = self.pair(m, len(m.pairs), tag)
                m.pairs.append(p)
                state = "clean" if p.clean else (
                    f"CONTAMINATED (others {100 * p.seq.contamination.share:.0f} % / "
                    f"{100 * p.par.contamination.share:.0f} % of the machine) — not used")  # fmt: skip
                self.say(f"{m.key} pair {p.index + 1} ({'seq→par' if p.sequential_first else 'par→seq'}): "
                         f"{p.seq.total:.2f} s vs {p.par.total:.2f} s = {p.ratio:.2f}×, {state}")  # fmt: skip
                m.status = stop_reason(len(m.clean_pairs), len(m.pairs) - len(m.clean_pairs),
                                       m.ratios, g.min_pairs, g.max_pairs, g.ci_target, g.reruns)  # fmt: skip
                if m.status:
                    active.remove((tag, m))
                    iv = m.interval(g.min_pairs)
                    self.say(
                        f"{m.key}: {iv.text() if iv else 'not measurable'} (stopped: {m.status})"
                    )
                write()

    def measure(self, kind: str, rc: RunConfig, wav: Path, threads: int | None) -> tuple[CostMeasurement, Contamination]:  # fmt: skip
        """One cost-model figure, re-run while contaminated (at most ``reruns`` times)."""
        for attempt in range(1, self.grid.reruns + 2):
            run = self.timed(rc, wav, f"cost/{kind}-{rc.n_chunks}-{threads or 'auto'}-a{attempt}", threads)  # fmt: skip
            if run.clean:
                break
        cont = run.contamination
        return CostMeasurement.from_record(kind, run.record, attempt, run.clean, cont.to_dict()), cont  # fmt: skip

    def cost_model(self) -> CostReport:
        g, cfg, job_settings = self.grid, self.cfg, self.wb.settings.job
        seq_models = g.sequential_models(cfg)
        full = self.wb.job("sequential", list(seq_models)).threads_per_replica(job_settings, 1)
        sets = {len(ms): ms for ms in reversed(g.parallel_sets(cfg)) if len(ms) > 1}
        cuts = sorted({i / k for k in sets for i in range(1, k)})
        clip = self.noise(g.cost_clip_s, cuts)
        # A pool already running replicas of t threads measures "one replica at t threads":
        # one chunk on its first replica while the others idle (no new process to start).
        running = {self.wb.job("parallel", list(ms)).threads_per_replica(job_settings, len(ms)): ms for ms in sets.values()}  # fmt: skip
        taken = []
        for t in thread_counts(full):
            if t == full:
                rc = RunConfig(g.cost_clip_s, "sequential", 1, seq_models)
            elif t in running:
                rc = RunConfig(g.cost_clip_s, "parallel", 1, running[t])
            else:
                rc = RunConfig(g.cost_clip_s, "sequential", 1, seq_models)
                self.warm_up([rc], threads=t)
            taken.append(self.measure("threads", rc, clip, t))
        for k, models in sorted(sets.items()):
            taken.append(self.measure("replicas", RunConfig(g.cost_clip_s, "parallel", k, models), clip, None))  # fmt: skip
        out = [m for m, _ in taken]
        for m in out:
            self.say(f"cost model: {m.replicas} replica(s) × {m.threads} thread(s): {m.fps_per_replica:.1f} frames/s each"
                     + ("" if m.clean else " — CONTAMINATED"))  # fmt: skip
        if all(m.clean for m in out):
            machine = self.result.runs[0].record["machine"] if self.result.runs else {"cpu": "?", "cores": os.cpu_count()}  # fmt: skip
            return CostReport(out, fit(out, machine["cpu"], int(machine["cores"])), g.cost_clip_s)
        busy = describe_busy([c for _, c in taken], g.max_contamination)
        return CostReport(out, None, g.cost_clip_s, busy)


def run_bench(
    cfg: dict[str, Any],
    grid: Grid,
    csv_path: str | os.PathLike,
    text_source: str = "builtin",
    lang: str | None = None,
    say: Say = print,
    workbench: Workbench | None = None,
) -> BenchResult:
    """Run the whole bench and write the CSV and its sidecars (rewritten after every pair,
    so an interrupted bench keeps what it measured)."""
    grid.validate()
    paths = sidecar_paths(csv_path)
    comps = comparisons(grid, cfg)  # resolves models and chunk counts before anything starts
    workdir = paths["workdir"]
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / BENCH_MARKER).write_text("runs of a `lipbench bench`, not jobs\n")
    tag = len({c.parallel.models for c in comps}) > 1
    measured = [Measured(c, c.key(tag), planner_for(c.duration_s, len(c.parallel.models), cfg, stream=grid.stream)) for c in comps]  # fmt: skip
    say(f"speech: {len(grid.durations)} duration(s) from {text_source} …")
    speech = make_speech(grid.durations, workdir / "speech", cfg, text_source, lang)
    result = BenchResult(time.strftime("%Y%m%d-%H%M%S"), grid, measured, [], speech, None,
                         {k: str(v) for k, v in paths.items()})  # fmt: skip
    own = workbench is None
    wb = workbench or Workbench(cfg)

    def write() -> None:
        write_outputs(result, cfg, text_source)

    try:
        runner = Runner(wb, workdir, grid, result, say, cfg)
        configs = [c.sequential for c in comps] + [c.parallel for c in comps]
        once = {
            (rc.strategy, rc.models, rc.n_chunks): rc for rc in reversed(configs)
        }  # per pool use
        runner.warm_up(list(reversed(once.values())))
        runner.pairs(write)
        if any(m.interval(grid.min_pairs) for m in measured):
            result.cost = runner.cost_model()
        else:
            result.cost = CostReport([], None, grid.cost_clip_s, "no comparison was measurable, so it was skipped")  # fmt: skip
        keyframes = wb.settings.encoder.keyframes
        fps = keyframes.fps
        for m in measured:
            m.predicted = predicted_speedup(result.cost.cost, m.comparison, fps, m.chunk_frames)
            if grid.stream:
                whole = [sum(m.chunk_frames)] if m.chunk_frames else None
                m.predicted_latency = {
                    "sequential": predicted_latency(result.cost.cost, m.comparison.sequential, keyframes, whole),
                    "parallel": predicted_latency(result.cost.cost, m.comparison.parallel, keyframes, m.chunk_frames),
                }  # fmt: skip
    finally:
        if own:
            wb.close()
        for name in ("warmup", "noise", "cost"):
            shutil.rmtree(workdir / name, ignore_errors=True)  # noise clips, not results
        write()
    if result.cost and result.cost.cost:
        result.files["cost_model"] = str(cost_model_path(cfg["results_dir"]))
    return result


def run_sweep(
    durations: Any = None,
    chunk_counts: Any = None,
    model_sets: Any = None,
    min_pairs: int | None = None,
    max_pairs: int | None = None,
    device: str | None = "auto",
    text_source: str | None = None,
    lang: str | None = None,
    output: str | os.PathLike = "results/bench/sweep.csv",
    config: str | None = None,
    seed: int | None = None,
    say: Callable[[str], None] = print,
    stream: Any = None,
) -> BenchResult:
    """The sweep notebook's entry point: every parameter left None comes from the config's
    ``sweep`` section; ``chunk_counts="planner"`` = the planner's pick per duration;
    ``stream``: whether the timed runs stream (True/False or their text)."""
    cfg = load_config(config or None, {"device": device} if device else None)
    grid = Grid.from_config(
        cfg,
        durations=as_list(durations, float),
        chunk_counts="planner" if chunk_counts == "planner" else as_list(chunk_counts, int),
        model_sets=as_model_sets(model_sets),
        min_pairs=min_pairs,
        max_pairs=max_pairs,
        seed=seed,
        stream=stream,
    )
    source = text_source or cfg["sweep"]["text_source"]
    return run_bench(cfg, grid, output, source, lang, say=say)
