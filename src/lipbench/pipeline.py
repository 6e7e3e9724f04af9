"""One job end to end: text → speech → 16 kHz WAV → plan → chunks rendered on replicas →
concat (stream copy) → audio muxed once → result.mp4 + run.json.

Sequential is the one-chunk, one-replica case of the same path, so a benchmark compares
strategies, not two code paths. A ``Workbench`` keeps replica pools warm across jobs (the
server and the bench reuse them).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import audio as audio_mod
from . import tts as tts_mod
from .config import load_config, resolve_device
from .errors import InputError
from .face import detect_faces, load_avatar
from .metrics import UsageSampler, seam_scores
from .plan import Plan, plan_from_config
from .pool import ChunkTask, ReplicaPool, ReplicaSpec
from .records import StageTimer, machine, versions, write_record
from .render import UNTRAINED_LABEL, JobInputs, RenderOptions
from .video import EncoderSettings, merge_chunks

log = logging.getLogger("lipbench.pipeline")

STRATEGIES = ("sequential", "parallel")
UNTRAINED_NOTE = (
    "seeded-random: no checkpoint found in weights/, so the mouth region comes from UNTRAINED "
    "weights — this is not a real lip-sync (put wav2lip_gan.pth / wav2lip.pth in weights/)"
)


def default_threads(replicas: int, cfg: dict[str, Any]) -> int:
    """Threads per replica: replicas × threads ≤ cores unless configured otherwise."""
    cores = os.cpu_count() or 1
    if replicas == 1:
        return cfg["render"]["threads"] or cores
    return cfg["parallel"]["threads_per_replica"] or max(1, cores // replicas)


def model_seed(base: int, model: str) -> int:
    """Seed of a model's random initialisation when its checkpoint is missing: distinct per
    checkpoint name (GAN and NOGAN stay different networks, as real checkpoints are), stable
    across processes, so every replica of one name holds identical weights."""
    return base + zlib.crc32(model.encode()) % 100_000


def replica_specs(
    cfg: dict[str, Any], models: list[str], threads: int | None = None
) -> list[ReplicaSpec]:
    device = resolve_device(cfg)
    n_threads = threads or default_threads(len(models), cfg)
    w = cfg["weights"]
    opts = RenderOptions.from_config(cfg)
    return [
        ReplicaSpec(
            m, n_threads, device, w["dir"], dict(w["files"]), model_seed(cfg["seed"], m), opts
        )
        for m in models
    ]


@dataclass
class PreparedAudio:
    wav: Path
    speech: Path | None
    tts: dict[str, Any] | None


def prepare_audio(
    cfg: dict[str, Any],
    workdir: Path,
    timer: StageTimer,
    text: str | None = None,
    lang: str | None = None,
    engine: str | None = None,
    audio: str | os.PathLike | None = None,
) -> PreparedAudio:
    """TTS (when given text) and conversion to 16 kHz mono WAV."""
    if (text is None) == (audio is None):
        raise InputError(
            "give either text or an audio file", 'use --text "…" or --audio speech.wav'
        )
    speech = None
    tts_info = None
    if text is not None:
        engine = engine or cfg["tts"]["engine"]
        lang = lang or cfg["text"]["lang"]
        tts_mod.validate_text(text, cfg["text"]["max_chars"])
        concrete = tts_mod.resolve_engine(engine, lang)
        speech = workdir / f"speech{tts_mod.output_suffix(concrete)}"
        with timer.stage("tts"):
            res = tts_mod.synthesize(
                text,
                lang,
                speech,
                engine=concrete,
                max_chars=cfg["text"]["max_chars"],
                timeout_s=cfg["tts"]["timeout_s"],
            )
        tts_info = {
            "engine": res.engine,
            "lang": res.lang,
            "sample_rate": res.sample_rate,
            "chars": len(text),
        }
        src: Path = res.path
    else:
        src = Path(audio)  # type: ignore[arg-type]
        timer.stages["tts"] = 0.0
    wav = workdir / "audio.wav"
    with timer.stage("convert"):
        audio_mod.convert_to_wav16k(src, wav, ffmpeg=cfg["video"]["ffmpeg"])
    return PreparedAudio(wav, speech, tts_info)


def build_job(
    cfg: dict[str, Any],
    wav: Path,
    avatar: str | None,
    timer: StageTimer,
    label: str | None,
    job_id: str,
) -> tuple[JobInputs, np.ndarray]:
    """Full-file mel (computed once) and the avatar's face boxes (cached on disk)."""
    f = cfg["face"]
    with timer.stage("detect"):
        av = load_avatar(avatar or f["avatar"])
        boxes = detect_faces(
            av, f["detector"], tuple(f["pads"]), f["smooth_frames"], f["cache_dir"]
        )
    with timer.stage("split"):
        samples = audio_mod.read_wav(wav)
        mel = audio_mod.melspectrogram(samples)
    n_frames = max(1, round(len(samples) / audio_mod.SAMPLE_RATE * cfg["fps"]))
    job = JobInputs(
        mel=mel,
        n_frames=n_frames,
        fps=float(cfg["fps"]),
        avatar=av,
        boxes=boxes,
        label=label,
        meta={"key": job_id},
    )
    return job, samples


def assemble_record(
    strategy: str,
    plan: Plan,
    chunk_rows: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    replicas: list[dict[str, Any]],
    stages: dict[str, float],
    outputs: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run record shared by `generate` (replica pool) and the workflow (`merge`)."""
    weights: dict[str, Any] = {}
    for r in replicas:
        weights.setdefault(r["model"], r["weights"])
    trained = all(w["trained"] for w in weights.values())
    infer = stages.get("infer") or 0.0
    return {
        "strategy": strategy,
        "models": sorted({c.model for c in plan.chunks}, key=[c.model for c in plan.chunks].index),
        "weights": weights,
        "weights_trained": trained,
        "weights_note": None if trained else UNTRAINED_NOTE,
        "timings": stages,
        "plan": plan.to_dict(),
        "chunks": chunk_rows,
        "seams": seam_scores(edges),
        "frames": plan.n_frames,
        "fps": plan.fps,
        "audio_duration_s": plan.duration_s,
        "render_fps": round(plan.n_frames / infer, 3) if infer else None,
        "replicas": replicas,
        "device": replicas[0].get("device") if replicas else None,
        "threads_per_replica": replicas[0].get("threads") if replicas else None,
        "outputs": outputs,
        **(extra or {}),
        "machine": machine(),
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_benchmarks(folder: str | os.PathLike | None) -> dict[str, float]:
    """Stage wall times from Snakemake `benchmark:` TSVs (<folder>/<stage>.tsv, column `s`)."""
    out: dict[str, float] = {}
    if not folder or not Path(folder).is_dir():
        return out
    for tsv in sorted(Path(folder).glob("*.tsv")):
        lines = tsv.read_text().splitlines()
        if len(lines) >= 2:
            head, row = lines[0].split("\t"), lines[1].split("\t")
            if "s" in head:
                out[tsv.stem] = round(float(row[head.index("s")]), 4)
    return out


def record_from_chunk_files(
    cfg: dict[str, Any],
    plan: Plan,
    stats: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    merge_s: float,
    result: Path,
    wav: Path,
    benchmarks: str | None,
    strategy: str,
) -> dict[str, Any]:
    """The run record of a workflow run: per-chunk stats come from the chunk jobs, stage
    times from Snakemake's benchmark files. Each chunk job loads its model itself (a cost
    the in-process pool pays once per pool), so that is recorded per chunk and summed."""
    bench = read_benchmarks(benchmarks)
    t0 = min(s["start_ts"] for s in stats)
    rows = []
    for s in stats:
        row = dict(s)
        row["start_offset_s"] = round(s["start_ts"] - t0, 4)
        row["end_offset_s"] = round(s["end_ts"] - t0, 4)
        rows.append(row)
    stages = {
        "tts": bench.get("tts", 0.0),
        "convert": bench.get("convert", 0.0),
        "detect": max((s.get("detect_s") or 0.0) for s in stats),
        "split": bench.get("plan", 0.0),
        "infer": round(max(s["end_ts"] for s in stats) - t0, 4),
        "merge": round(merge_s, 4),
    }
    stages["total"] = round(sum(stages.values()), 4)
    replicas = [
        {
            "replica": s["replica"],
            "model": s["model"],
            "threads": s["threads"],
            "device": s["device"],
            "pid": s.get("pid"),
            "load_s": s["model_load_s"],
            "weights": s["weights"],
            "peak_rss_mb": s["peak_rss_mb"],
            "batch_size": s.get("batch_size"),
            "calibration": s.get("calibration"),
        }
        for s in rows
    ]
    load = [s["model_load_s"] for s in rows]
    untrained = not all(s["weights"]["trained"] for s in rows)
    return assemble_record(
        strategy,
        plan,
        rows,
        edges,
        replicas,
        stages,
        outputs={"video": str(result), "audio": str(wav), "speech": None},
        extra={
            "model_load": {
                "per_job": True,
                "per_chunk_s": load,
                "sum_s": round(sum(load), 4),
                "note": "every workflow chunk job loads its checkpoint (a pool pays this once)",
            },
            "engine": "snakemake",
            "one_chunk_on_full_replica": False,  # each chunk job has the threads the rule gave it
            "snakemake_benchmarks": bench,
            "label": UNTRAINED_LABEL if untrained and cfg["weights"]["label_untrained"] else None,
        },
    )


class Workbench:
    """Config + warm replica pools. ``generate`` runs one job with a chosen strategy."""

    def __init__(self, cfg: dict[str, Any] | None = None):
        self.cfg = cfg if cfg is not None else load_config()
        self._pools: dict[tuple, ReplicaPool] = {}

    def pool(self, models: list[str], threads: int | None = None) -> ReplicaPool:
        key = (tuple(models), threads)
        if key not in self._pools:
            pool = ReplicaPool(replica_specs(self.cfg, list(models), threads))
            for r in pool.replica_info():
                if not r["weights"]["trained"]:
                    log.warning(
                        "replica %d (%s): no checkpoint found — SEEDED RANDOM weights, output is not a trained lip-sync",
                        r["replica"],
                        r["model"],
                    )
            self._pools[key] = pool
        return self._pools[key]

    def models_for(self, strategy: str, models: list[str] | None) -> list[str]:
        if strategy not in STRATEGIES:
            raise InputError(
                f"unknown strategy '{strategy}'", f"use one of {', '.join(STRATEGIES)}"
            )
        if strategy == "sequential":
            return [models[0] if models else self.cfg["sequential"]["model"]]
        return list(models or self.cfg["parallel"]["models"])

    def generate(
        self,
        out_dir: str | os.PathLike,
        text: str | None = None,
        lang: str | None = None,
        audio: str | os.PathLike | None = None,
        strategy: str = "sequential",
        models: list[str] | None = None,
        chunks: int | None = None,
        engine: str | None = None,
        avatar: str | None = None,
        threads: int | None = None,
        progress: bool = True,
        keep_chunks: bool = False,
    ) -> dict[str, Any]:
        """Run one job; write ``out_dir/result.mp4`` and ``out_dir/run.json``; return the record."""
        cfg = self.cfg
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        models = self.models_for(strategy, models)
        timer = StageTimer()
        job_id = uuid.uuid4().hex[:12]
        # Inputs first (text, language, audio, avatar/face): bad input fails before any
        # model is loaded.
        prepared = prepare_audio(cfg, out_dir, timer, text, lang, engine, audio)
        job, samples = build_job(cfg, prepared.wav, avatar, timer, None, job_id)
        with timer.stage("split"):
            n_chunks = 1 if strategy == "sequential" else chunks
            plan = plan_from_config(samples, cfg, models, chunks=n_chunks)
            plan.save(out_dir / "plan.json")
        replica_models = models
        if strategy == "parallel" and plan.n_chunks == 1 and threads is None:
            # One chunk cannot use a second replica: render it like the sequential path
            # (one replica, all cores) instead of on a replica with a share of the cores.
            replica_models = models[:1]
        pool_t0 = time.perf_counter()
        pool = self.pool(replica_models, threads)
        pool_wait = time.perf_counter() - pool_t0  # replica start-up: recorded, not in total
        timer.t0 += pool_wait
        trained = all(r["weights"]["trained"] for r in pool.replica_info())
        label = None if trained or not cfg["weights"]["label_untrained"] else UNTRAINED_LABEL
        job.label = label
        chunk_dir = out_dir / "chunks"
        chunk_dir.mkdir(exist_ok=True)
        enc = EncoderSettings.from_config(cfg)
        tasks = [
            ChunkTask(
                task_id=c.index,
                job=job,
                start=c.frame_start,
                end=c.frame_end,
                out_path=str(chunk_dir / f"chunk_{c.index}.mp4"),
                encoder=enc,
                chunk_index=c.index,
            )
            for c in plan.chunks
        ]
        assign = [c.index % len(pool.replicas) for c in plan.chunks]
        result = out_dir / "result.mp4"
        try:
            bar = tqdm(
                total=plan.n_frames,
                unit="frame",
                desc=f"{strategy} ×{len(models)}",
                disable=not progress,
                leave=False,
            )
            wall_t0 = time.time()
            with UsageSampler(pids=pool.pids()) as usage, timer.stage("infer"):
                stats, edges = pool.render_chunks(tasks, assign, progress=bar.update)
            bar.close()
            with timer.stage("merge"):
                chunk_files = [Path(t.out_path) for t in tasks]
                merge_chunks(
                    chunk_files,
                    prepared.wav,
                    result,
                    cfg["video"]["ffmpeg"],
                    cfg["video"]["audio_bitrate"],
                )
        except BaseException:
            shutil.rmtree(chunk_dir, ignore_errors=True)
            raise
        if not keep_chunks:
            shutil.rmtree(chunk_dir, ignore_errors=True)
        stages = {**timer.stages, "total": timer.total()}
        chunk_rows = []
        for c in plan.chunks:
            st = dict(stats[c.index])
            st["start_offset_s"] = round(st["start_ts"] - wall_t0, 4)
            st["end_offset_s"] = round(st["end_ts"] - wall_t0, 4)
            chunk_rows.append(st)
        replicas = pool.replica_info()
        for r in replicas:
            mine = [s["peak_rss_mb"] for s in chunk_rows if s["replica"] == r["replica"]]
            r["peak_rss_mb"] = max(mine, default=None)
        record = assemble_record(
            strategy,
            plan,
            chunk_rows,
            [edges[c.index] for c in plan.chunks],
            replicas,
            stages,
            outputs={
                "video": str(result),
                "audio": str(prepared.wav),
                "speech": str(prepared.speech) if prepared.speech else None,
            },
            extra={
                "model_load": {
                    "per_job": False,
                    "pool_start_s": pool.start_s,
                    "waited_s": round(pool_wait, 4),
                    "note": "replicas load once per pool and are reused; not in timings.total",
                },
                "cpu": usage.summary(),
                "restarts": pool.restarts,
                "tts": prepared.tts,
                "label": label,
                "render_options": vars(pool.specs[0].render_options),
                "engine": "pool",
                "one_chunk_on_full_replica": replica_models != models,
            },
        )
        write_record(out_dir / "run.json", record)
        return record

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
