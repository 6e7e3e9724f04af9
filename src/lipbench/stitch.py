"""The workflow's last step for one job: concat the chunk videos (stream copy), mux the
audio once, verify the result, and write its run record from the chunk jobs' sidecars and
Snakemake's benchmark files — through the same ``record.build_record`` as the pool path.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from .chunk import load_sidecar, sidecar_paths
from .errors import InputError
from .jobs import job_label, resolve_job
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
from .video import count_frames, merge_chunks


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


def check_chunk_order(chunks: list[Path], plan: Plan) -> None:
    """Each chunk file must be the plan's chunk at its place: its stats (rendered beside it)
    name the chunk index and frame range. Chunks given out of order would merge out of sync."""
    for k, (path, c) in enumerate(zip(chunks, plan.chunks, strict=True)):
        stats, _ = sidecar_paths(path)
        if not stats.is_file():  # no stats beside it: its frame count must be the chunk's
            frames, _ = count_frames(path)
            if frames != c.n_frames:
                raise InputError(
                    f"chunk file {k} ({path}) has {frames} frames, the plan's chunk {k} has {c.n_frames}",
                    "pass --chunks in the plan's order (chunk 0 first), each rendered for this plan",
                )
            continue
        row = load_sidecar(path).row
        if (row.chunk, row.frame_start, row.frame_end) != (c.index, c.frame_start, c.frame_end):
            raise InputError(
                f"chunk file {k} ({path}) is chunk {row.chunk} (frames {row.frame_start}–{row.frame_end}), "
                f"but the plan's chunk {k} is frames {c.frame_start}–{c.frame_end}",
                "pass --chunks in the plan's order (chunk 0 first)",
            )


def merge_job(
    settings: Any,  # request.Settings
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
    models: list[str] | None = None,
) -> tuple[float, RunRecord | None]:
    """Merge, verify and (with ``record``) write run.json. Returns (merge seconds, record).
    ``models``: the job's (the config's for its strategy when None)."""
    plan = Plan.load(plan_path)
    chunk_paths = [Path(c) for c in chunks]
    if len(chunk_paths) != plan.n_chunks:
        raise InputError(
            f"{len(chunk_paths)} chunk files given, the plan has {plan.n_chunks}",
            "pass every chunk in order",
        )
    job = resolve_job(settings.job, strategy, models)
    check_chunk_order(chunk_paths, plan)
    out = Path(out)
    # all or nothing: the video is published only once the record is built
    merged = out.with_name(f".{out.stem}.merging-{uuid.uuid4().hex[:8]}{out.suffix}")
    try:
        t0 = time.perf_counter()
        merge_chunks(chunk_paths, audio, merged, settings.ffmpeg, settings.audio_bitrate,
                     expect_frames=plan.n_frames, fps=plan.fps)  # fmt: skip
        merge_s = round(time.perf_counter() - t0, 4)
        rec = None if record is None else _record(settings, plan, plan_path, audio, chunk_paths, out, record, benchmarks, strategy, speech, tts_info, job_info, job, merge_s)  # fmt: skip
        os.replace(merged, out)
    finally:
        merged.unlink(missing_ok=True)
    if rec is not None:
        rec.write(record)  # type: ignore[arg-type]
    return merge_s, rec


def _record(settings: Any, plan: Plan, plan_path: str | Path, audio: str | Path,
            chunk_paths: list[Path], out: Path, record: str | Path, benchmarks: list[str | os.PathLike] | None,
            strategy: str, speech: str | None, tts_info: str | Path | None,
            job_info: list[str | os.PathLike] | None, job: Any, merge_s: float) -> RunRecord:  # fmt: skip
    """The workflow run's record from its chunk jobs' sidecars and Snakemake's benchmarks."""
    cars = [load_sidecar(c) for c in chunk_paths]
    bench = read_benchmarks(benchmarks)
    rows = [c.row for c in cars]
    first = min(r.start_ts for r in rows)
    stages = {
        "tts": bench.get("tts", 0.0),
        "convert": bench.get("convert", 0.0),
        "detect": max(c.detect_s for c in cars),
        "mel": max(c.mel_s for c in cars),
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
    return build_record(
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
        label=job_label([c.model for c in plan.chunks], settings.job.weights),
        tts=TTSInfo(**{k: info[k] for k in ("engine", "lang", "sample_rate", "chars")})
        if info
        else None,
        render_options=cars[0].render_options,
        threads_per_replica=cars[0].replica.render.threads,
        one_chunk_on_full_replica=job.one_chunk_on_full_replica(plan.n_chunks),
        process_start_ts=min(cars, key=lambda c: c.row.chunk).process_start_ts,
        snakemake_benchmarks=bench,
        placements=placed if placed and all(placed) else None,  # type: ignore[arg-type]
        face=cars[0].face,  # every chunk job tracked the same face over the whole job
    )
