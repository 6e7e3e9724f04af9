"""One job end to end, in three phases on one ``GenerateRequest``:

- **prepare**: text → speech → 16 kHz WAV; the avatar and its face boxes; the full-file mel;
  the chunk plan. Bad input fails here, before any replica is leased.
- **render**: the plan's chunks on leased replicas (``pools``), streamed as they render
  when asked.
- **finish**: concat (stream copy) → audio muxed once → a verified MP4 + its run record.

Sequential is the one-chunk, one-replica case of the same path, so a benchmark compares
strategies, not two code paths. Outputs are written in a staging folder and published all
together at the end (``outputs``).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import audio as audio_mod
from . import tts as tts_mod
from .chunk import Edges, process_start_ts
from .config import load_config
from .inputs import build_inputs
from .jobs import Job, job_label, resolve_job, threads_per_replica
from .metrics import UsageSampler
from .outputs import OutputNames, check_free_space, staging
from .plan import Plan, plan_audio
from .pool import ChunkTask, ReplicaPool
from .pools import Pools
from .record import (
    ChunkRow,
    FaceInfo,
    ModelLoad,
    Outputs,
    ReplicaRow,
    RunRecord,
    Startup,
    Timings,
    TTSInfo,
    build_record,
)
from .replica import Cancelled
from .request import GenerateRequest, Settings
from .stages import StageTimer
from .stream.playlist import StreamPublisher
from .stream.run import latency, start_publisher, stream_target
from .video import merge_chunks


@dataclass
class Prepared:
    """What the render phase needs: the job's audio, inputs and plan."""

    wav: Path
    speech: Path | None
    tts: TTSInfo | None
    inputs: Any  # render.JobInputs
    plan: Plan


@dataclass
class Rendered:
    rows: list[ChunkRow]  # in chunk order
    edges: list[Edges]
    replicas: list[ReplicaRow]
    threads: int  # per replica
    usage: dict[str, Any]
    pool_start_s: float
    waited_s: float
    leased_ts: float  # when the replicas were this job's (rendering starts)
    publisher: StreamPublisher | None


def _check_stop(req: GenerateRequest) -> None:
    """Between stages: a job whose client went away stops here, not only while rendering."""
    if req.hooks.should_stop and req.hooks.should_stop():
        raise Cancelled.client_gone()


def prepare_audio(req: GenerateRequest, stage: OutputNames, timer: StageTimer) -> tuple[Path, Path | None, TTSInfo | None]:  # fmt: skip
    """TTS (when given text) and conversion to 16 kHz mono WAV, into the staging side files."""
    s = req.settings
    speech, info = None, None
    if req.text is not None:
        speech = stage.speech_stem.with_suffix(tts_mod.output_suffix(req.engine))
        with timer.stage("tts"):
            res = tts_mod.synthesize(req.text, req.lang, speech, engine=req.engine,
                                     max_chars=s.tts.max_chars, timeout_s=s.tts.timeout_s)  # fmt: skip
        info = TTSInfo(res.engine, res.lang, res.sample_rate, len(req.text))
        src: Path = res.path
    else:
        assert req.audio is not None
        src = req.audio
        timer.stages["tts"] = 0.0
    _check_stop(req)
    with timer.stage("convert"):
        audio_mod.convert_to_wav16k(src, stage.audio, ffmpeg=s.ffmpeg)
    return stage.audio, speech, info


def prepare(req: GenerateRequest, stage: OutputNames, timer: StageTimer) -> Prepared:
    wav, speech, info = prepare_audio(req, stage, timer)
    _check_stop(req)
    s = req.settings
    inputs, samples = build_inputs(s.face, s.fps, wav, req.avatar, timer, uuid.uuid4().hex[:12])
    _check_stop(req)
    with timer.stage("split"):
        plan = plan_audio(samples, s, list(req.job.models), req.job.chunks, stream=req.stream)
        plan.save(stage.plan)
    check_free_space(stage.side, plan.n_frames, *inputs.avatar.size)
    # one label for the whole job, from the checkpoints its plan renders with
    inputs.label = job_label([c.model for c in plan.chunks], s.job.weights)
    return Prepared(wav, speech, info, inputs, plan)


def chunk_path(stage: OutputNames, index: int) -> Path:
    return stage.chunks / f"chunk_{index}.mp4"


def render(req: GenerateRequest, prep: Prepared, stage: OutputNames, pools: Pools) -> Rendered:
    job, plan, s = req.job, prep.plan, req.settings
    threads = job.threads_per_replica(s.job, plan.n_chunks)
    stage.chunks.mkdir(exist_ok=True)
    # a chunk task carries only its frame range's mel and boxes, the avatar by reference
    tasks = [ChunkTask(c.index, prep.inputs.for_range(c.frame_start, c.frame_end),
                       c.frame_start, c.frame_end, str(chunk_path(stage, c.index)),
                       s.encoder, c.index,
                       stream_target(s.audio_bitrate, stage, plan, c) if req.stream else None)
             for c in plan.chunks]  # fmt: skip
    with pools.lease(job.replica_models(plan.n_chunks), threads) as lease:
        leased_ts = time.time()
        pool: ReplicaPool = lease.pool
        replicas = pool.replica_rows()
        publisher = (
            start_publisher(stage, [t.stream for t in tasks], s.encoder, req.hooks.on_stream)
            if req.stream
            else None
        )
        bar = tqdm(total=plan.n_frames, unit="frame", desc=f"{job.strategy} ×{len(job.models)}",
                   disable=not req.progress, leave=False)  # fmt: skip
        try:
            with UsageSampler(pids=pool.pids()) as usage:
                rows, edges = pool.render_chunks(tasks, bar.update, req.hooks.should_stop)
        except BaseException:
            if publisher is not None:
                publisher.close(finished=False)  # stop watching; the playlist stays open
            raise
        finally:
            bar.close()
        if publisher is not None:
            publisher.close(finished=True)
    return Rendered(
        rows=[rows[c.index] for c in plan.chunks], edges=[edges[c.index] for c in plan.chunks],
        replicas=replicas, threads=threads, usage=usage.summary(), pool_start_s=pool.start_s,
        waited_s=lease.waited_s, leased_ts=leased_ts, publisher=publisher,
    )  # fmt: skip


def startup(req: GenerateRequest, origin_ts: float, job_ts: float, inputs_ts: float,
            done: Rendered) -> Startup:  # fmt: skip
    """The time before the first frame, split at consecutive marks: origin → the CLI's main
    → the pipeline imported → the job started → inputs ready → replicas leased → first frame
    (the front end's marks, where it set them)."""
    first_ts = min(done.rows, key=lambda r: r.chunk).first_frame_ts
    cli, imports = req.marks.get("cli"), req.marks.get("imports")

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 4)

    return Startup(
        interpreter_s=gap(origin_ts, cli), imports_s=gap(cli, imports), config_s=gap(imports, job_ts),
        inputs_s=round(inputs_ts - job_ts, 4), model_s=round(done.leased_ts - inputs_ts, 4),
        first_batch_s=round(first_ts - done.leased_ts, 4),
    )  # fmt: skip


def finish(req: GenerateRequest, prep: Prepared, done: Rendered, stage: OutputNames,
           timer: StageTimer, origin: tuple[float, str], started: Startup) -> RunRecord:  # fmt: skip
    s, plan, final = req.settings, prep.plan, req.outputs
    with timer.stage("merge"):
        merge_chunks([chunk_path(stage, c.index) for c in plan.chunks], prep.wav, stage.video, s.ffmpeg, s.audio_bitrate,
                     expect_frames=plan.n_frames, fps=plan.fps)  # fmt: skip
    t = timer.stages
    timings = Timings(t["tts"], t["convert"], t["detect"], t["mel"], t["split"], t["infer"],
                      t["merge"], timer.total(), startup=started)  # fmt: skip
    return build_record(
        engine="pool",
        strategy=req.job.strategy,
        plan=plan,
        chunks=done.rows,
        edges=done.edges,
        replicas=done.replicas,
        timings=timings,
        outputs=Outputs(
            video=str(final.video),
            record=str(final.record),
            plan=str(final.plan),
            audio=str(final.audio),
            speech=str(final.side / prep.speech.name) if prep.speech else None,
        ),  # fmt: skip
        model_load=ModelLoad(
            per_job=False,
            load_s=[r.load_s for r in done.replicas],
            pool_start_s=done.pool_start_s,
            waited_s=done.waited_s,
            note="replicas load once per pool and are reused; not in timings.total",
        ),  # fmt: skip
        cpu=done.usage,
        label=prep.inputs.label,
        tts=prep.tts,
        render_options=dataclasses.asdict(s.render_options()),
        threads_per_replica=done.threads,
        one_chunk_on_full_replica=req.job.one_chunk_on_full_replica(plan.n_chunks),
        process_start_ts=origin[0],
        latency=latency(origin, done.publisher, time.time(), final.playlist),
        face=FaceInfo(settings=s.face.to_dict(), **prep.inputs.boxes.faceless_summary()),
    )


class Workbench:
    """Settings + warm replica pools. ``generate`` runs one request."""

    cancels_jobs = True  # honours ``request.Hooks.should_stop`` (the server asks)

    def __init__(
        self, cfg: dict[str, Any] | Settings | None = None, in_process_single: bool = False
    ):
        """``in_process_single``: see ``pools.Pools``."""
        self.settings = cfg if isinstance(cfg, Settings) else Settings.from_config(cfg if cfg is not None else load_config())  # fmt: skip
        self.pools = Pools(self.settings, in_process_single)

    def request(self, out: str | Path, **kwargs: Any) -> GenerateRequest:
        """A request on this workbench's settings (``GenerateRequest.build``'s arguments)."""
        return GenerateRequest.build(self.settings, out, **kwargs)

    def job(self, strategy: str = "sequential", models: list[str] | None = None,
            chunks: int | None = None, threads: int | None = None) -> Job:  # fmt: skip
        return resolve_job(self.settings.job, strategy, models, chunks, threads)

    def pool(self, models: list[str] | tuple[str, ...], threads: int | None = None) -> ReplicaPool:
        """The warm pool for these models (started on first use)."""
        return self.pools.get(
            models, threads or threads_per_replica(len(models), self.settings.job)
        )

    def generate(self, req: GenerateRequest) -> RunRecord:
        """Run one request; publish its .mp4, .run.json and .files/ together at the end,
        after the video is verified; return the record. ``req.hooks.should_stop`` cancels
        the job between stages and at the replicas' next 8-frame tick: `pool.Cancelled` is
        raised, nothing is published, the replicas stay warm."""
        origin = req.origin or (process_start_ts(), "process start")
        with staging(req.outputs, keep_stream=req.keep_live_stream) as st:
            timer = StageTimer()
            job_ts = time.time()
            prep = prepare(req, st.stage, timer)
            inputs_ts = time.time()
            with timer.stage("infer"):
                done = render(req, prep, st.stage, self.pools)
            # replica start-up or another job's lease: recorded, not counted in the timings
            timer.stages["infer"] = round(timer.stages["infer"] - done.waited_s, 4)
            timer.t0 += done.waited_s
            rec = finish(
                req,
                prep,
                done,
                st.stage,
                timer,
                origin,
                startup(req, origin[0], job_ts, inputs_ts, done),
            )
            if not req.keep_chunks:
                shutil.rmtree(st.stage.chunks, ignore_errors=True)
            rec.write(st.stage.record)
            st.publish()
        return rec

    def close(self) -> None:
        self.pools.close()

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
