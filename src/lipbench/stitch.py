"""The workflow's last step for one job: concat the chunk videos (stream copy), mux the
audio once, verify the result, and write its run record from the chunk jobs' sidecars and
Snakemake's benchmark files — through the same ``record.build_record`` as the pool path.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .chunk import load_sidecar
from .errors import InputError
from .jobs import frame_label
from .plan import Plan
from .record import (
    ChunkRow,
    ModelLoad,
    Outputs,
    Placement,
    RunRecord,
    Timings,
    TTSInfo,
    build_record,
)
from .video import merge_chunks


def read_benchmarks(files: list[str | os.PathLike] | None) -> dict[str, float]:
    """Stage wall times from exactly these Snakemake `benchmark:` TSVs (<stage>.tsv, column
    `s`): never a folder's leftovers from an earlier run."""
    out: dict[str, float] = {}
    for tsv in map(Path, files or []):
        lines = tsv.read_text().splitlines()
        if len(lines) >= 2:
            head, row = lines[0].split("\t"), lines[1].split("\t")
            if "s" in head:
                out[tsv.stem] = round(float(row[head.index("s")]), 4)
    return out


def placement(row: ChunkRow, info: dict[str, Any]) -> Placement | None:
    """A chunk job's placement from its job_info.sh stamps, trusted only when they enclose
    the chunk's own render stamps (the same attempt)."""
    step0, step1 = info.get("step_start_ts"), info.get("step_end_ts")
    if step0 is None or step1 is None or not step0 <= row.start_ts <= row.end_ts <= step1:
        return None
    submit, start = info.get("submit_ts"), info.get("slurm_start_ts")
    slurm = submit is not None and start is not None
    return Placement(
        chunk=row.chunk, host=str(info.get("host")), slurm_job_id=info.get("slurm_job_id"),
        queue_wait_s=round(start - submit, 3) if slurm else None,
        node_startup_s=round(step0 - start, 3) if slurm else None,
        setup_s=round(row.start_ts - step0, 3), render_s=round(row.end_ts - row.start_ts, 3),
        job_s=round(step1 - step0, 3),
    )  # fmt: skip


def joined_usage(usages: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """One `cpu` summary for a workflow run, shaped like the pool's UsageSampler.summary():
    every chunk job's samples, with times counted from the first chunk's start."""
    samples: list[dict[str, Any]] = []
    for u in usages:
        samples += [{**x, "t": round(u["t0"] + x["t"] - t0, 3)} for x in u.get("samples", [])]
    samples.sort(key=lambda x: x["t"])
    cpu = [x["cpu_percent"] for x in samples]
    return {
        "interval_s": usages[0].get("interval_s") if usages else None,
        "n": len(cpu),
        "cpu_percent_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
        "cpu_percent_max": round(max(cpu), 1) if cpu else None,
        "samples": samples,
    }


def merge_job(
    cfg: dict[str, Any],
    plan_path: str | Path,
    audio: str | Path,
    chunks: list[str | Path],
    out: str | Path,
    record: str | Path | None = None,
    benchmarks: list[str | os.PathLike] | None = None,
    strategy: str = "parallel",
    speech: str | None = None,
    tts_info: str | Path | None = None,
    job_info: list[str | os.PathLike] | None = None,
) -> tuple[float, RunRecord | None]:
    """Merge, verify and (with ``record``) write run.json. Returns (merge seconds, record)."""
    plan = Plan.load(plan_path)
    chunk_paths = [Path(c) for c in chunks]
    if len(chunk_paths) != plan.n_chunks:
        raise InputError(
            f"{len(chunk_paths)} chunk files given, the plan has {plan.n_chunks}",
            "pass every chunk in order",
        )
    t0 = time.perf_counter()
    merge_chunks(chunk_paths, audio, out, cfg["video"]["ffmpeg"], cfg["video"]["audio_bitrate"],
                 expect_frames=plan.n_frames, fps=plan.fps)  # fmt: skip
    merge_s = round(time.perf_counter() - t0, 4)
    if record is None:
        return merge_s, None
    cars = [load_sidecar(c) for c in chunk_paths]
    bench = read_benchmarks(benchmarks)
    rows = [c.row for c in cars]
    first = min(r.start_ts for r in rows)
    stages = {
        "tts": bench.get("tts", 0.0),
        "convert": bench.get("convert", 0.0),
        "detect": max(c.detect_s for c in cars),
        "split": bench.get("plan", 0.0),
        "infer": round(max(r.end_ts for r in rows) - first, 4),
        "merge": merge_s,
    }
    load = [c.replica.load_s for c in cars]
    # Each chunk job's whole wall time (process start, imports, model load, detect, mel,
    # render) from its Snakemake benchmark: what a warm replica pool does not pay per job.
    job_s = [bench.get(f"infer_chunk_{r.chunk}") for r in rows]
    have_jobs = all(j is not None for j in job_s)
    info = json.loads(Path(tts_info).read_text()) if tts_info else None
    stamps = [json.loads(Path(j).read_text()) for j in job_info or []]
    placed = [placement(r, i) for r, i in zip(rows, stamps, strict=False)]
    rec = build_record(
        engine="snakemake",
        strategy=strategy,
        plan=plan,
        chunks=rows,
        edges=[c.edges for c in cars],
        replicas=[c.replica for c in cars],
        timings=Timings(**stages, total=round(sum(stages.values()), 4)),
        outputs=Outputs(
            video=str(out), record=str(record), audio=str(audio), speech=speech, plan=str(plan_path)
        ),  # fmt: skip
        model_load=ModelLoad(
            per_job=True,
            load_s=load,
            note="every workflow chunk job loads its checkpoint (a pool pays this once)",
            per_chunk_job_s=job_s if have_jobs else None,  # type: ignore[arg-type]
            per_chunk_overhead_s=[round(j - r.wall_s, 4) for j, r in zip(job_s, rows, strict=True)]  # type: ignore[operator]
            if have_jobs
            else None,
        ),  # fmt: skip
        cpu=joined_usage([c.usage for c in cars], first),
        label=frame_label(all(c.replica.weights.trained for c in cars), cfg),
        tts=TTSInfo(**{k: info[k] for k in ("engine", "lang", "sample_rate", "chars")})
        if info
        else None,
        render_options=cars[0].render_options,
        one_chunk_on_full_replica=False,  # each chunk job has the threads the rule gave it
        process_start_ts=min(cars, key=lambda c: c.row.chunk).process_start_ts,
        snakemake_benchmarks=bench,
        placements=placed if placed and all(placed) else None,  # type: ignore[arg-type]
    )
    rec.write(record)
    return merge_s, rec
