"""One generate request: queue the job, wait for it while watching the client, answer with
the run record's numbers.

A client that leaves while its job **waits** gives its place up (the job never starts). One
that leaves while its job **runs** gets the job cancelled: the queue sets the job's cancel
flag, which the workbench checks between stages and at each batch boundary (``Hooks.should_stop``),
so the slot frees within one batch and the replicas stay warm; the job's folder is removed.
A workbench without that parameter finishes the job first (its slot stays taken until
then, so replicas are never shared) and the output is discarded all the same. A job that has
not leased its replicas yet (speech synthesis and the other stages before rendering) frees
its slot at once and never leases them (``phase``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from ..errors import InputError, LipbenchError
from ..record import RunRecord
from ..request import Hooks
from .errors import error_response, lipbench_response, on_unexpected, queue_full_response
from .phase import JobPhase
from .queue import QueueFull
from .state import ServerState
from .storage import StoredJob
from .view import response_view

log = logging.getLogger("lipbench.server")

POLL_S = 0.25  # how often a waiting request checks whether its client is still there
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, the log does


@dataclass
class PreparedJob:
    """One job ready for the queue: its id, the workbench call, its cancel flag, and the
    release of the earlier job's WAV it renders (pinned until the job ends)."""

    id: str
    strategy: str
    audio_id: str | None
    cancel: threading.Event
    release: Callable[[], None]
    work: Callable[[], RunRecord]


def prepare_job(state: ServerState, strategy: str, body: Any, received_ts: float,
                job_id: str | None = None, **extra: Any) -> PreparedJob:  # fmt: skip
    """The workbench call for a validated request body. ``received_ts`` (epoch seconds, when
    the request arrived) is the origin of the record's latency timings, so they count from
    the click, queue wait included; ``extra`` goes into the job's request (streaming).
    Raises ``InputError`` for an unknown ``audio_id``."""
    job_id = job_id or secrets.token_hex(16)
    names = state.store.names(job_id)
    cancel = threading.Event()
    source: dict[str, Any] = {"text": body.text, "lang": body.lang, "engine": body.engine}
    if body.audio_id is not None:
        source = {"audio": state.store.pin(body.audio_id)}
    release = _once(lambda: state.store.unpin(body.audio_id) if body.audio_id else None)
    hooks = Hooks(should_stop=cancel.is_set if state.cancellable else None,
                  on_stream=extra.pop("on_stream", None))  # fmt: skip

    def work() -> RunRecord:
        try:
            # built here, in the job: a problem with it is this job's error, like a render's
            req = state.wb.request(names.video, **source, strategy=strategy,
                                   chunks=getattr(body, "chunks", None), progress=False,
                                   origin=(received_ts, "request"), hooks=hooks, **extra)  # fmt: skip
            return state.wb.generate(req)
        finally:
            release()  # the earlier job's WAV may be removed by the policy from now on

    return PreparedJob(job_id, strategy, body.audio_id, cancel, release, work)


def audio_id_error(exc: InputError) -> JSONResponse:
    return error_response(422, exc.problem, exc.fix, errors=[
        {"field": "audio_id", "message": exc.problem}])  # fmt: skip


async def run_job(state: ServerState, request: Request, strategy: str, body: Any) -> Any:
    received_ts = time.time()
    try:
        job = prepare_job(state, strategy, body, received_ts)
    except InputError as exc:
        return audio_id_error(exc)
    job_id, cancel, release = job.id, job.cancel, job.release

    def abandoned(_f: asyncio.Future) -> None:
        log.info("job %s: client left while it ran; stopped and its output discarded", job_id)
        state.store.discard(job_id)

    t0 = time.monotonic()
    work, idle = phased(state, job)
    queued = asyncio.ensure_future(state.queue.run(work, cancel, abandoned, idle))
    try:
        while not queued.done():
            await asyncio.wait({queued}, timeout=POLL_S)
            if not queued.done() and await request.is_disconnected():
                log.info("job %s (%s): client disconnected; cancelling", job_id, strategy)
                queued.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await queued
                return JSONResponse({"detail": "client disconnected"}, status_code=CLIENT_GONE)
        rec: RunRecord = queued.result()
    except QueueFull as exc:
        return queue_full_response(exc)
    except LipbenchError as exc:
        state.store.discard(job_id)
        log.warning("job %s (%s) failed: %s", job_id, strategy, exc)
        return lipbench_response(exc)
    except Exception as exc:  # noqa: BLE001 - logged here, reported without a traceback
        state.store.discard(job_id)
        return await on_unexpected(request, exc)
    finally:
        if not queued.done():
            queued.cancel()
        if not cancel.is_set():  # not left running in a thread: it started and ended, or never ran
            release()
    stored = await asyncio.to_thread(state.store.add, job_id, strategy, body.audio_id)  # hashes
    log.info("job %s (%s): %s s → %s", job_id, strategy, rec.timings.total,
             state.store.names(job_id).video)  # fmt: skip
    return response_from_record(stored, rec, time.monotonic() - t0)


def phased(state: ServerState, job: PreparedJob) -> tuple[Callable[[], RunRecord], Callable[[], bool] | None]:  # fmt: skip
    """The job's work with its leases watched, and the queue's ``idle`` question: a job
    cancelled before it leased replicas frees its slot at once (``phase``)."""
    phase = JobPhase(job.cancel)
    return (lambda: phase.run(job.work)), (
        phase.holds_no_replicas if state.watches_leases else None
    )


def _once(fn: Callable[[], Any]) -> Callable[[], None]:
    """``fn`` at most once, from whichever thread gets there first."""
    lock = threading.Lock()
    done = False

    def call() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
        fn()

    return call


def response_from_record(job: StoredJob, rec: RunRecord, elapsed_s: float) -> dict[str, Any]:
    """The response (``view.GenerateResponse``, derived from the record) as JSON data."""
    view = response_view(rec, job.id, job.audio_sha256, job.audio_from, elapsed_s)
    return view.model_dump(mode="json")
