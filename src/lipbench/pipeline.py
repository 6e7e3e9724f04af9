"""One job end to end: text → speech → 16 kHz WAV → plan → chunks rendered on replicas →
concat (stream copy) → audio muxed once → a verified MP4 + its run record.

Sequential is the one-chunk, one-replica case of the same path, so a benchmark compares
strategies, not two code paths. A ``Workbench`` keeps replica pools warm across jobs (the
server and the bench reuse them) and leases each pool to one job at a time.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from tqdm import tqdm

from . import audio as audio_mod
from . import tts as tts_mod
from .chunk import ReplicaSpec, process_start_ts
from .config import load_config, resolve_device
from .errors import InputError
from .inputs import build_inputs
from .jobs import (
    Job,
    OutputNames,
    frame_label,
    output_names,
    replica_device,
    resolve_job,
    threads_per_replica,
    visible_gpus,
)
from .metrics import UsageSampler
from .plan import plan_from_config
from .pool import ChunkTask, ReplicaPool
from .record import ModelLoad, Outputs, RunRecord, StageTimer, Timings, TTSInfo, build_record
from .stream.playlist import PLAYLIST
from .stream.run import latency, start_publisher, stream_target
from .stream.segments import check_streamable
from .video import EncoderSettings, merge_chunks

log = logging.getLogger("lipbench.pipeline")


@dataclass
class PreparedAudio:
    wav: Path
    speech: Path | None
    tts: TTSInfo | None


def prepare_audio(
    cfg: dict[str, Any],
    names: OutputNames,
    timer: StageTimer,
    text: str | None = None,
    lang: str | None = None,
    engine: str | None = None,
    audio: str | os.PathLike | None = None,
) -> PreparedAudio:
    """TTS (when given text) and conversion to 16 kHz mono WAV, into ``names``' side files."""
    if (text is None) == (audio is None):
        raise InputError(
            "give either text or an audio file", 'use --text "…" or --audio speech.wav'
        )
    speech = None
    info = None
    if text is not None:
        engine = engine or cfg["tts"]["engine"]
        lang = lang or cfg["text"]["lang"]
        tts_mod.validate_text(text, cfg["text"]["max_chars"])
        concrete = tts_mod.resolve_engine(engine, lang)
        speech = names.speech_stem.with_suffix(tts_mod.output_suffix(concrete))
        with timer.stage("tts"):
            res = tts_mod.synthesize(text, lang, speech, engine=concrete,
                                     max_chars=cfg["text"]["max_chars"], timeout_s=cfg["tts"]["timeout_s"])  # fmt: skip
        info = TTSInfo(res.engine, res.lang, res.sample_rate, len(text))
        src: Path = res.path
    else:
        src = Path(audio)  # type: ignore[arg-type]
        timer.stages["tts"] = 0.0
    with timer.stage("convert"):
        audio_mod.convert_to_wav16k(src, names.audio, ffmpeg=cfg["video"]["ffmpeg"])
    return PreparedAudio(names.audio, speech, info)


def refuse_overwriting_input(names: OutputNames, inputs: list[str | os.PathLike | None]) -> None:
    """An output path equal to (or holding) an input path would destroy the user's file."""
    outs = [p.resolve() for p in names.all()]
    for given in inputs:
        if given is None or str(given).lower() == "default":
            continue
        p = Path(given).resolve()
        if any(p == o or o in p.parents for o in outs):
            raise InputError(
                f"--out {names.video} would overwrite the input {given}",
                "pick another --out (outputs are <out>.mp4, <out>.run.json and <out>.files/)",
            )


def publish(staging: OutputNames, final: OutputNames) -> None:
    """Move a finished run's files into place: side files first, the record last, so an
    interrupted run leaves the previous result complete."""
    if final.side.exists():
        trash = final.side.with_name(f".{final.side.name}.old-{uuid.uuid4().hex[:6]}")
        final.side.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    staging.side.rename(final.side)
    os.replace(staging.video, final.video)
    os.replace(staging.record, final.record)


def _resolved_backend(described: dict[str, Any] | None) -> dict[str, Any]:
    """The backend and precision the replicas resolved ("auto" → what calibration chose)."""
    return {k: described[k] for k in ("backend", "precision")} if described else {}


def remove_stale_staging(final: OutputNames) -> None:
    """A run killed with SIGKILL leaves its staging folder behind (never a published file):
    the next run for the same --out removes those whose process is gone."""
    for d in final.video.parent.glob(f".{final.video.stem}.staging-*"):
        pid = d.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


class Workbench:
    """Config + warm replica pools. ``generate`` runs one job with a chosen strategy."""

    def __init__(self, cfg: dict[str, Any] | None = None, in_process_single: bool = False):
        """``in_process_single``: a one-replica pool runs on a thread of this process (the
        CLI's sequential path starts faster: no second interpreter, no second torch import)."""
        self.cfg = cfg if cfg is not None else load_config()
        self.in_process_single = in_process_single
        self._pools: dict[tuple, ReplicaPool] = {}
        self._leases: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()

    def job(self, strategy: str = "sequential", models: list[str] | None = None,
            chunks: int | None = None, threads: int | None = None) -> Job:  # fmt: skip
        return resolve_job(self.cfg, strategy, models, chunks, threads)

    def _key(self, models: tuple[str, ...] | list[str], threads: int) -> tuple:
        return (tuple(models), threads)

    def pool(self, models: list[str] | tuple[str, ...], threads: int | None = None) -> ReplicaPool:
        """The warm pool for these models (started on first use)."""
        threads = threads or threads_per_replica(len(models), self.cfg)
        key = self._key(models, threads)
        with self._guard:
            self._leases.setdefault(key, threading.Lock())
            if key not in self._pools:
                device = resolve_device(self.cfg)
                specs = [ReplicaSpec.from_config(self.cfg, m, threads, replica_device(device, i, visible_gpus(device))) for i, m in enumerate(models)]  # fmt: skip
                pool = ReplicaPool(specs, in_process=self.in_process_single and len(specs) == 1)
                for r in pool.replica_rows():
                    if not r.weights.trained:
                        log.warning("replica %d (%s): no checkpoint found — SEEDED RANDOM weights, output is not a trained lip-sync",
                                    r.replica, r.model)  # fmt: skip
                self._pools[key] = pool
            return self._pools[key]

    def generate(
        self,
        out: str | os.PathLike,
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
        should_stop: Callable[[], bool] | None = None,
        stream: bool = False,
        on_stream: Callable[[Path], None] | None = None,
        origin: tuple[float, str] | None = None,
    ) -> RunRecord:
        """Run one job; publish ``out`` (.mp4), ``<out>.run.json`` and ``<out>.files/``
        together at the end, after the video is verified; return the record. ``should_stop``
        (e.g. "the client went away") cancels the job at the replicas' next 8-frame tick:
        `pool.Cancelled` is raised, nothing is published, the replicas stay warm.

        ``stream``: segments and a growing HLS playlist under ``<out>.files/stream/`` (live in
        the staging folder until the end; ``on_stream(playlist)`` is called once the first
        segment is listed). ``origin`` = (epoch seconds, what it is) for the latency timings;
        default: this process's start."""
        job = self.job(strategy, models, chunks, threads)
        final = output_names(out)
        refuse_overwriting_input(final, [audio, avatar])
        final.video.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(final)
        staging_dir = (
            final.video.parent / f".{final.video.stem}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        stage = output_names(staging_dir / final.video.name)
        stage.side.mkdir(parents=True)
        try:
            rec = self._run(job, stage, final, text, lang, audio, engine, avatar, progress,
                            should_stop, stream, on_stream, origin or (process_start_ts(), "process start"))  # fmt: skip
            if not keep_chunks:
                shutil.rmtree(stage.chunks, ignore_errors=True)
            rec.write(stage.record)
            publish(stage, final)
        finally:
            shutil.rmtree(staging_dir, ignore_errors=True)
        return rec

    def _run(self, job: Job, stage: OutputNames, final: OutputNames, text, lang, audio,
             engine, avatar, progress: bool, should_stop, stream: bool, on_stream,
             origin: tuple[float, str]) -> RunRecord:  # fmt: skip
        cfg = self.cfg
        timer = StageTimer()
        enc = EncoderSettings.from_config(cfg)
        if stream:
            check_streamable(enc)
        # Inputs first (text, language, audio, avatar/face): bad input fails before any
        # model is loaded.
        prepared = prepare_audio(cfg, stage, timer, text, lang, engine, audio)
        inputs, samples = build_inputs(cfg, prepared.wav, avatar, timer, uuid.uuid4().hex[:12])
        with timer.stage("split"):
            plan = plan_from_config(samples, cfg, list(job.models), job.chunks, stream=stream)
            plan.save(stage.plan)
        replica_models = job.replica_models(plan.n_chunks)
        threads = job.threads_per_replica(cfg, plan.n_chunks)
        pool_t0 = time.perf_counter()
        pool = self.pool(replica_models, threads)
        lease = self._leases[self._key(replica_models, threads)]
        with lease:  # a replica never serves two jobs at once
            pool_wait = time.perf_counter() - pool_t0  # replica start-up: recorded, not in total
            timer.t0 += pool_wait
            replicas = pool.replica_rows()
            inputs.label = frame_label(all(r.weights.trained for r in replicas), cfg)
            stage.chunks.mkdir(exist_ok=True)
            tasks = [ChunkTask(c.index, inputs, c.frame_start, c.frame_end,
                               str(stage.chunks / f"chunk_{c.index}.mp4"), enc, c.index,
                               stream_target(cfg, stage, plan, c) if stream else None)
                     for c in plan.chunks]  # fmt: skip
            publisher = start_publisher(stage, tasks, enc, on_stream) if stream else None
            assign = [c.index % len(pool.replicas) for c in plan.chunks]
            bar = tqdm(total=plan.n_frames, unit="frame", desc=f"{job.strategy} ×{len(job.models)}",
                       disable=not progress, leave=False)  # fmt: skip
            try:
                with UsageSampler(pids=pool.pids()) as usage, timer.stage("infer"):
                    rows, edges = pool.render_chunks(tasks, assign, bar.update, should_stop)
            except BaseException:
                if publisher is not None:
                    publisher.close(finished=False)  # stop watching; the playlist stays open
                raise
            if publisher is not None:
                publisher.close(finished=True)
            bar.close()
        with timer.stage("merge"):
            merge_chunks([Path(t.out_path) for t in tasks], prepared.wav, stage.video,
                         cfg["video"]["ffmpeg"], cfg["video"]["audio_bitrate"],
                         expect_frames=plan.n_frames, fps=plan.fps)  # fmt: skip
        total = timer.total()
        t = timer.stages
        timings = Timings(
            t["tts"], t["convert"], t["detect"], t["split"], t["infer"], t["merge"], total
        )
        stream_info = latency(
            timings, origin, publisher, time.time(), final.side / "stream" / PLAYLIST
        )
        rec = build_record(
            engine="pool",
            strategy=job.strategy,
            plan=plan,
            chunks=[rows[c.index] for c in plan.chunks],
            edges=[edges[c.index] for c in plan.chunks],
            replicas=replicas,
            timings=timings,
            outputs=Outputs(
                video=str(final.video),
                record=str(final.record),
                plan=str(final.plan),
                audio=str(final.audio),
                speech=str(final.side / prepared.speech.name) if prepared.speech else None,
            ),  # fmt: skip
            model_load=ModelLoad(
                per_job=False,
                load_s=[r.load_s for r in replicas],
                pool_start_s=pool.start_s,
                waited_s=round(pool_wait, 4),
                note="replicas load once per pool and are reused; not in timings.total",
            ),  # fmt: skip
            cpu=usage.summary(),
            label=inputs.label,
            tts=prepared.tts,
            # as the replicas resolved them (batch size "auto" → the calibrated number)
            render_options={
                **asdict(pool.specs[0].render_options),
                "batch_size": replicas[0].batch_size,
                **_resolved_backend(replicas[0].backend),
            },
            one_chunk_on_full_replica=job.one_chunk_on_full_replica(plan.n_chunks),
            process_start_ts=origin[0],
        )
        rec.stream = stream_info
        return rec

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
