"""Stream jobs in memory (their state, the live stream folder, the result or error), a
bounded registry of them, and the one function that reads a stream's files from disk.

A stream's files are reached only through a job id this server handed out and a name that
matches ``STREAM_FILE`` (``index.m3u8`` or ``chunk_NNN/[retry_N/]seg_NNNNN.ts``); a segment is served
only once the playlist beside it lists it, so a segment ffmpeg is still writing is never sent.
While the job runs its stream lives in the job's staging folder (``live_dir``); the
workbench then moves it to ``<job>/result.files/stream/``, so a read that loses the race
with that move simply tries the published folder next.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outputs import PLAYLIST
from ..stream.segments import SEGMENT_URI
from .storage import read_plain

STREAM_FILE = re.compile(rf"{re.escape(PLAYLIST)}|{SEGMENT_URI}", re.ASCII)
MEDIA_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t"}
IDLE_CANCEL_S = 30.0  # a queued or running job nobody asks about for this long is cancelled
ACTIVE = ("queued", "running")


@dataclass
class StreamJob:
    id: str
    strategy: str
    received_ts: float  # epoch seconds: when the request arrived (the latency origin)
    t0: float  # monotonic, same moment
    state: str = "queued"  # queued → running → done | failed | cancelled
    live_dir: Path | None = None  # the staging stream folder, from the first segment on
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    error_status: int | None = None
    seen: float = field(default_factory=time.monotonic)  # the client's last request
    queued: asyncio.Future | None = None  # the queue's task: cancelling it cancels the job
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def move(self, to: str, only_from: tuple[str, ...]) -> bool:
        """Change state if it is one of ``only_from`` (the worker thread and the event loop
        both move it); True when it moved."""
        with self._lock:
            if self.state not in only_from:
                return False
            self.state = to
            return True

    @property
    def playlist_url(self) -> str:
        return f"/streams/{self.id}/{PLAYLIST}"

    @property
    def status_url(self) -> str:
        return f"/api/stream/jobs/{self.id}"

    @property
    def playable(self) -> bool:
        return self.live_dir is not None and self.state in ("running", "done")

    def touch(self) -> None:
        self.seen = time.monotonic()

    def idle_s(self) -> float:
        return time.monotonic() - self.seen

    def on_stream(self, playlist: Path) -> None:
        """The workbench's callback (a background thread): the first segment is listed."""
        self.live_dir = Path(playlist).parent

    def started(self) -> dict[str, Any]:
        return {"id": self.id, "strategy": self.strategy, "state": self.state,
                "playlist_url": self.playlist_url, "status_url": self.status_url}  # fmt: skip

    def status(self, idle_cancel_s: float) -> dict[str, Any]:
        return {
            **self.started(),
            "playable": self.playable,
            "elapsed_s": round(time.monotonic() - self.t0, 3),
            "idle_cancel_s": idle_cancel_s,
            "result": self.result,
            "error": self.error,
            "error_status": self.error_status,
        }


class StreamJobs:
    """The stream jobs this server started, newest last; finished ones beyond ``keep`` are
    forgotten (their videos stay in the job store, their streams stay servable by id)."""

    def __init__(self, keep: int, idle_cancel_s: float = IDLE_CANCEL_S):
        self.keep = keep
        self.idle_cancel_s = idle_cancel_s
        self._jobs: OrderedDict[str, StreamJob] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: StreamJob) -> None:
        with self._lock:
            self._jobs[job.id] = job
            for job_id in list(self._jobs):
                if len(self._jobs) <= self.keep:
                    break
                if self._jobs[job_id].state not in ACTIVE:
                    del self._jobs[job_id]

    def get(self, job_id: str) -> StreamJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def active(self) -> list[StreamJob]:
        with self._lock:
            return [j for j in self._jobs.values() if j.state in ACTIVE]


def read_stream_file(base: Path, dirs: list[Path], name: str) -> bytes | None:
    """``name`` (already checked against ``STREAM_FILE``) from the first folder that has it;
    a segment only where the playlist beside it lists it. None when no folder has it. Every
    folder lies in the job's folder ``base``; nothing is read through a symbolic link."""
    for folder in dirs:
        if name != PLAYLIST:
            playlist = read_plain(base, folder / PLAYLIST)
            if playlist is None or name not in playlist.decode("utf-8").splitlines():
                continue
        data = read_plain(base, folder / name)
        if data is not None:
            return data
        # moved from the staging folder to its place meanwhile: try the next
    return None
