"""Routes of Stream mode: start a stream job (answers at once), its status, cancel it, and
its playlist and segments (from the live staging folder, then from the published one; GET
and HEAD, byte ranges). A finished stream job this server no longer holds in memory (after a
restart, or forgotten) answers its status from the job store as long as its files are kept."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ..outputs import PLAYLIST
from ..record import RunRecord
from .errors import HTTPProblem
from .runner import response_from_record
from .schemas import JOB_ID, StreamStarted, StreamStatus, error_docs
from .state import ServerState
from .storage import plain_file, read_plain
from .stream_jobs import MEDIA_TYPES, STREAM_FILE, StreamJob, read_stream_file
from .stream_runner import cancel_stream, start_stream

log = logging.getLogger("lipbench.server")
RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII)

NO_STREAM_FIX = (
    "start a stream job with POST /api/stream/generate (or /api/stream/generate_parallel) and "
    "use the playlist_url and status_url it returns"
)
FILE_FIX = (
    "ask for index.m3u8 and the segment URIs it lists (relative to the playlist), "
    "e.g. chunk_000/seg_00000.ts"
)
WAIT_FIX = "poll the job's status_url until playable is true, then load the playlist"
NOT_FOUND = {404: "no stream job with this id (unknown, or forgotten after it ended)"}
FILE_NOT_FOUND = {
    404: "no such file: unknown job, a name other than index.m3u8 or a segment URI, "
    "a segment the playlist does not list (yet), or a stream that has no segment yet"
}


def _id_param(name: str, description: str, pattern: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": pattern}}  # fmt: skip


def add_stream_routes(app: FastAPI, state: ServerState, requests: dict[str, type]) -> None:
    """``requests``: strategy → its body model (the same as /api/generate and
    /api/generate_parallel take)."""

    def job_or_404(job_id: str) -> StreamJob:
        job = state.streams.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise HTTPProblem(404, f"no stream job with id {job_id[:40]!r}", NO_STREAM_FIX)
        return job

    async def status_of(job_id: str) -> dict[str, Any]:
        """A job in memory; else a finished stream job in the store (its status rebuilt
        from its record); else 404."""
        if JOB_ID.fullmatch(job_id) and state.streams.get(job_id) is None:
            stored = await asyncio.to_thread(stored_status, state, job_id)
            if stored is not None:
                return stored
        job = job_or_404(job_id)
        job.touch()
        return job.status(state.streams.idle_cancel_s)

    def starter(strategy: str) -> Any:
        async def start(body: Any) -> Any:
            got = start_stream(state, strategy, body)
            if not isinstance(got, StreamJob):
                return got  # the error response (429, an unknown audio_id)
            return JSONResponse(got.started(), 202, {"Location": got.status_url})

        start.__doc__ = (
            f"Start a {strategy} job that streams while it renders; answers at once (202) "
            "with its id, playlist_url and status_url. Poll the status until playable, then "
            "play the playlist (HLS); the job is cancelled by DELETE on its status_url or when "
            "nobody has asked about it (status, playlist, segments) for idle_cancel_s."
        )
        start.__annotations__["body"] = requests[strategy]
        return start

    for strategy, path in (("sequential", "/api/stream/generate"),
                           ("parallel", "/api/stream/generate_parallel")):  # fmt: skip
        app.add_api_route(path, starter(strategy), methods=["POST"], status_code=202,
                          response_model=StreamStarted, tags=["stream"],
                          operation_id=f"stream_{strategy}",
                          responses=error_docs(413, 422, 429))  # fmt: skip

    job_param = _id_param("job_id", "the id a stream start returned", f"^{JOB_ID.pattern}$")

    async def status(request: Request) -> Any:
        """A stream job's state; when done its result (video_url, timings with
        first_playable_s, stall_s, total), when failed or cancelled the error. Counts as the
        client still watching."""
        return await status_of(request.path_params["job_id"])

    async def cancel(request: Request) -> Any:
        """Cancel a queued or running stream job (its files are removed); a job that has
        ended is left as it is. Answers its status."""
        job_id = request.path_params["job_id"]
        job = state.streams.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is not None:
            cancel_stream(job, "cancelled by its client (DELETE)")
        return await status_of(job_id)

    for method, endpoint in (("GET", status), ("DELETE", cancel)):
        app.add_api_route("/api/stream/jobs/{job_id}", endpoint, methods=[method],
                          response_model=StreamStatus, tags=["stream"],
                          operation_id=f"stream_job_{method.lower()}",
                          responses=error_docs(404, what=NOT_FOUND),
                          openapi_extra={"parameters": [job_param]})  # fmt: skip

    async def stream_file(request: Request) -> Response:
        """A stream's playlist (``index.m3u8``, never cached) or one of its segments
        (``chunk_NNN/[retry_N/]seg_NNNNN.ts``, once listed)."""
        job_id, name = request.path_params["job_id"], request.path_params["name"]
        if not (JOB_ID.fullmatch(job_id) and STREAM_FILE.fullmatch(name)):
            raise HTTPProblem(404, "no such stream file", FILE_FIX)
        job = state.streams.get(job_id)
        if job is None and state.store.get(job_id) is None:
            raise HTTPProblem(404, f"no stream with id {job_id}", NO_STREAM_FIX)
        published = state.store.names(job_id).stream
        dirs: list[Path] = [published]
        if job is not None:
            job.touch()
            if job.state in ("failed", "cancelled"):
                raise HTTPProblem(404, f"stream job {job_id} {job.state}: its stream was "
                                  "removed", f"see {job.status_url} for why")  # fmt: skip
            if job.live_dir is None and job.state != "done":
                raise HTTPProblem(404, f"the stream of job {job_id} is not ready yet "
                                  f"({job.state}, no segment so far)", WAIT_FIX,
                                  headers={"Retry-After": "1"})  # fmt: skip
            if job.live_dir is not None:
                dirs.insert(0, job.live_dir)
        base = state.store.folder(job_id)
        data = await asyncio.to_thread(read_stream_file, base, dirs, name)
        if data is None:
            raise HTTPProblem(404, f"no such stream file: {name}", FILE_FIX)
        playlist = name == PLAYLIST
        cache = "no-store" if playlist else "private, max-age=3600"  # listed segments never change
        return ranged(data, request.headers.get("range"), MEDIA_TYPES[Path(name).suffix],
                      {"Cache-Control": cache, "Accept-Ranges": "bytes"})  # fmt: skip

    for method in ("GET", "HEAD"):
        app.add_api_route(
            "/streams/{job_id}/{name:path}", stream_file, methods=[method], tags=["stream"],
            operation_id=f"stream_file_{method.lower()}", response_class=Response,
            responses={200: {"content": {MEDIA_TYPES[".m3u8"]: {}, MEDIA_TYPES[".ts"]: {}}},
                       206: {"description": "the byte range asked for (Range: bytes=a-b)"},
                       416: {"description": "a byte range outside the file"},
                       **error_docs(404, what=FILE_NOT_FOUND)},
            openapi_extra={"parameters": [
                _id_param("job_id", "the id a stream start returned", f"^{JOB_ID.pattern}$"),
                _id_param("name", "index.m3u8, or a segment URI the playlist lists",
                          f"^({STREAM_FILE.pattern})$")]},
        )  # fmt: skip


def ranged(data: bytes, header: str | None, media_type: str, headers: dict[str, str]) -> Response:
    """The whole file, or the one byte range ``header`` asks for (206; 416 when it lies
    outside the file). A header this does not understand (several ranges, other units) is
    ignored, as RFC 9110 allows: the whole file."""
    m = RANGE.fullmatch(header.strip()) if header else None
    if m is None or m.groups() == ("", ""):
        return Response(data, media_type=media_type, headers=headers)
    size = len(data)
    first, last = m.groups()
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    return Response(data[start : end + 1], status_code=206, media_type=media_type,
                    headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"})  # fmt: skip


def stored_status(state: ServerState, job_id: str) -> dict[str, Any] | None:
    """The status of a finished stream job kept in the store (its stream published beside
    its video), rebuilt from its record; None for anything else."""
    stored = state.store.get(job_id)
    if stored is None:
        return None
    base, names = state.store.folder(job_id), state.store.names(job_id)
    if not plain_file(base, names.playlist):
        return None  # a plain job: no stream
    text = read_plain(base, names.record)
    if text is None:
        return None
    job = StreamJob(job_id, stored.strategy, stored.created, time.monotonic(), state="done",
                    live_dir=names.stream)  # fmt: skip
    try:
        rec = RunRecord.from_dict(json.loads(text))
        job.result = response_from_record(stored, rec, rec.timings.total)
    except (ValueError, TypeError, KeyError, AttributeError):  # a record of another version
        log.warning("stream job %s: its run record cannot be read; status without result", job_id)
    return {**job.status(state.streams.idle_cancel_s),
            "elapsed_s": round(max(0.0, time.time() - stored.created), 3)}  # fmt: skip
