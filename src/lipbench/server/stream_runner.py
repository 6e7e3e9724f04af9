"""Stream jobs: start one (the request answers at once with its id and playlist URL), then
watch it on the event loop until it ends.

The job takes a place in the same bounded queue as ``/api/generate`` (429 + Retry-After
when full, before the request answers) and runs on the same leased pools, so a stream job
never shares a replica with another job. It renders with ``stream=True``: the workbench
writes segments and a growing playlist and tells us (``on_stream``) when the first segment
is listed; from then on the playlist is served.

**What cancels a stream job**: ``DELETE /api/stream/jobs/{id}``, or nobody asking about it
(its status, playlist or segments) for ``StreamJobs.idle_cancel_s`` (30 s) while it is
queued or running — a page that was closed stops polling, and hls.js reloads a live
playlist every segment, so a watched job is never idle. A queued job then gives its place
up; a running one is stopped at its next batch (as a departed ``/api/generate`` client's
job), its folder removed. Server shutdown stops them all.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from fastapi.responses import JSONResponse

from ..errors import InputError, LipbenchError
from ..record import RunRecord
from .errors import error_body, lipbench_status, queue_full_response
from .queue import QueueFull
from .runner import PreparedJob, audio_id_error, phased, prepare_job, response_from_record
from .state import ServerState
from .stream_jobs import ACTIVE, StreamJob

log = logging.getLogger("lipbench.server")

POLL_S = 0.25  # how often the watcher checks the job and its client's last request


def start_stream(state: ServerState, strategy: str, body: Any) -> StreamJob | JSONResponse:
    """Queue a stream job and return it (state ``queued``); or the error response (429, an
    unknown audio_id) when it cannot start."""
    job = StreamJob(secrets.token_hex(16), strategy, time.time(), time.monotonic())
    try:
        prepared = prepare_job(state, strategy, body, job.received_ts, job_id=job.id,
                               stream=True, on_stream=job.on_stream)  # fmt: skip
    except InputError as exc:
        return audio_id_error(exc)

    run, idle = phased(state, prepared)

    def work() -> RunRecord:
        job.move("running", only_from=("queued",))  # a slot is free: it left the queue
        return run()

    def abandoned(_f: asyncio.Future) -> None:
        log.info("stream job %s: cancelled; its output discarded", job.id)
        state.store.discard(job.id)

    try:
        job.queued = state.queue.submit(work, prepared.cancel, abandoned, idle)
    except QueueFull as exc:
        prepared.release()
        return queue_full_response(exc)
    state.streams.add(job)
    asyncio.ensure_future(_watch(state, job, prepared))
    log.info("stream job %s (%s) queued", job.id, strategy)
    return job


def cancel_stream(job: StreamJob, reason: str) -> None:
    """Cancel a queued or running job (no-op once it has ended)."""
    if job.queued is None or job.queued.done() or not job.move("cancelled", ACTIVE):
        return
    log.info("stream job %s (%s): cancelled: %s", job.id, job.strategy, reason)
    job.error = error_body(410, f"the job was cancelled: {reason}",
                           "start a new stream job (POST /api/stream/generate or "
                           "/api/stream/generate_parallel)")  # fmt: skip
    job.queued.cancel()


async def _watch(state: ServerState, job: StreamJob, prepared: PreparedJob) -> None:
    queued = job.queued
    assert queued is not None
    try:
        while not queued.done():
            await asyncio.wait({queued}, timeout=POLL_S)
            idle = job.idle_s()
            if not queued.done() and idle > state.streams.idle_cancel_s:
                cancel_stream(job, f"nobody asked about it for {idle:.0f} s")
    except asyncio.CancelledError:  # the server is stopping
        cancel_stream(job, "the server is stopping")
        raise
    finally:
        if not prepared.cancel.is_set():  # not left running in a thread
            prepared.release()
    if queued.cancelled():
        return  # cancel_stream has set the state and the error
    exc = queued.exception()
    if exc is not None:
        state.store.discard(job.id)
        if isinstance(exc, LipbenchError):
            log.warning("stream job %s (%s) failed: %s", job.id, job.strategy, exc)
            job.error_status = lipbench_status(exc)
            job.error = error_body(job.error_status, exc.problem, exc.fix)
        else:
            log.error("stream job %s failed", job.id, exc_info=exc)
            job.error_status = 500
            job.error = error_body(500, f"internal server error ({type(exc).__name__})")
        job.state = "failed"
        return
    rec: RunRecord = queued.result()
    try:
        stored = await asyncio.to_thread(state.store.add, job.id, job.strategy, prepared.audio_id)
    except OSError as exc:  # e.g. the disk filled: the job cannot be kept
        state.store.discard(job.id)
        job.error_status = 500
        job.error = error_body(500, f"could not store the finished job: {exc}")
        job.state = "failed"
        return
    job.result = response_from_record(stored, rec, time.monotonic() - job.t0)
    job.state = "done"
    log.info("stream job %s (%s): first playable %s s, stall %s s, total %s s", job.id,
             job.strategy, rec.timings.first_playable_s, rec.timings.stall_s,
             rec.timings.total)  # fmt: skip
