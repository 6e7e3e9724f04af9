"""Finished jobs on disk, bounded: ``<results_dir>/server/<id>/`` holds ``result.mp4``,
``result.run.json``, ``result.files/`` (speech, the 16 kHz WAV, the plan) and ``job.json``
(this store's marker: id, time, strategy, the WAV's sha256).

Policy: at most ``max_jobs`` jobs and ``max_bytes`` in all; when a new job passes either
bound the oldest are removed first (never the new one, nor one whose WAV a running job is
rendering). On start, the folders an earlier run left are **indexed again** when complete
(marker, video and record present), so their ids, videos and audio keep working after a
restart; incomplete ones (a crash mid-job, a warm-up) are removed; then the bounds apply.
Entries this store did not make are left alone.

Symbolic links are never followed: a link in place of a job folder is left alone and not
indexed, a job whose marker, video or record is a link (or sits below one) is not indexed,
and no file is served or pinned through a link (``plain_file``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..errors import InputError
from ..outputs import OutputNames, output_names
from .schemas import JOB_ID

log = logging.getLogger("lipbench.server")

MARKER = "job.json"
VIDEO = "result.mp4"
WARMUP_PREFIX = ".warmup-"


@dataclass
class StoredJob:
    id: str
    created: float  # epoch seconds
    strategy: str
    audio_sha256: str
    audio_from: str | None  # the job whose WAV this one rendered
    bytes: int = 0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):  # does not enter linked folders
        for f in files:
            try:
                total += (Path(root) / f).lstat().st_size  # a link counts as itself
            except OSError:  # removed while we looked
                pass
    return total


def plain_file(base: Path, path: Path) -> bool:
    """``path`` is a regular file below the real folder ``base`` with no symbolic link on
    the way (``base`` itself included)."""
    try:
        rel = path.relative_to(base)
    except ValueError:
        return False
    try:
        if not stat.S_ISDIR(os.lstat(base).st_mode):
            return False
        here = base
        for i, part in enumerate(rel.parts):
            here = here / part
            mode = os.lstat(here).st_mode
            last = i == len(rel.parts) - 1
            if not (stat.S_ISREG(mode) if last else stat.S_ISDIR(mode)):
                return False
    except OSError:
        return False
    return True


def read_plain(base: Path, path: Path) -> bytes | None:
    """The bytes of ``path`` if it is a ``plain_file`` of ``base`` (the last step opened
    without following a link, so a link put there after the check is refused too)."""
    if not plain_file(base, path):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


class JobStore:
    def __init__(self, root: Path, max_jobs: int, max_bytes: int):
        self.root = Path(root)
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self._jobs: OrderedDict[str, StoredJob] = OrderedDict()  # oldest first
        self._pins: dict[str, int] = {}
        self._lock = threading.Lock()
        self.removed = 0  # jobs removed by the policy since start

    # --- paths -------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        return self.root / job_id

    def names(self, job_id: str) -> OutputNames:
        return output_names(self.folder(job_id) / VIDEO)

    def warmup_video(self, strategy: str) -> Path:
        return self.root / f"{WARMUP_PREFIX}{strategy}" / VIDEO

    # --- start -------------------------------------------------------------------------

    def open(self) -> tuple[int, int]:
        """Index complete job folders of an earlier run, remove incomplete ones, apply the
        bounds. Returns (indexed, removed)."""
        self.root.mkdir(parents=True, exist_ok=True)
        found: list[StoredJob] = []
        dropped = 0
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(WARMUP_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            if entry.is_symlink() or not (entry.is_dir() and JOB_ID.fullmatch(entry.name)):
                log.info("storage: leaving %s alone (not a job folder)", entry)
                continue
            job = self._read(entry.name)
            if job is None:
                shutil.rmtree(entry, ignore_errors=True)
                dropped += 1
            else:
                found.append(job)
        with self._lock:
            self._jobs.clear()
            for job in sorted(found, key=lambda j: j.created):
                self._jobs[job.id] = job
            self._enforce(keep=None)
        log.info("storage: %d earlier job(s) indexed, %d incomplete removed, %d over the bounds removed",
                 len(found), dropped, self.removed)  # fmt: skip
        return len(self._jobs), dropped + self.removed

    def _read(self, job_id: str) -> StoredJob | None:
        names = self.names(job_id)
        folder = self.folder(job_id)
        marker = folder / MARKER
        if not all(plain_file(folder, p) for p in (marker, names.video, names.record)):
            return None
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            job = StoredJob(**{k: data[k] for k in ("id", "created", "strategy", "audio_sha256", "audio_from")})  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None
        if job.id != job_id:
            return None
        job.bytes = folder_bytes(self.folder(job_id))
        return job

    # --- jobs --------------------------------------------------------------------------

    def add(self, job_id: str, strategy: str, audio_from: str | None) -> StoredJob:
        """Record a finished job (its files are in place), then apply the bounds."""
        names = self.names(job_id)
        job = StoredJob(job_id, time.time(), strategy, sha256_file(names.audio), audio_from)
        write_text_atomic(self.folder(job_id) / MARKER, json.dumps(asdict(job)) + "\n")
        job.bytes = folder_bytes(self.folder(job_id))
        with self._lock:
            self._jobs[job_id] = job
            self._enforce(keep=job_id)
        return job

    def get(self, job_id: str) -> StoredJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def video(self, job_id: str) -> Path | None:
        """The video of an indexed job; None for anything else (no client path reaches
        the file system: only ids this store indexed)."""
        if not JOB_ID.fullmatch(job_id) or self.get(job_id) is None:
            return None
        path = self.names(job_id).video
        return path if plain_file(self.folder(job_id), path) else None

    def discard(self, job_id: str) -> None:
        """Remove a job folder that never finished (failed or abandoned)."""
        with self._lock:
            self._jobs.pop(job_id, None)
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def pin(self, job_id: str) -> Path:
        """The WAV of an earlier job, kept from the policy until ``unpin``."""
        with self._lock:
            job = self._jobs.get(job_id)
            wav = self.names(job_id).audio
            if job is None or not plain_file(self.folder(job_id), wav):
                raise InputError(
                    f"no audio with id {job_id}: never made, or removed by the storage policy",
                    "send text instead (or the audio_id of a recent job)",
                )
            self._pins[job_id] = self._pins.get(job_id, 0) + 1
            return wav

    def unpin(self, job_id: str) -> None:
        with self._lock:
            left = self._pins.get(job_id, 0) - 1
            if left > 0:
                self._pins[job_id] = left
            else:
                self._pins.pop(job_id, None)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            used = sum(j.bytes for j in self._jobs.values())
            return {"jobs": len(self._jobs), "bytes": used, "max_jobs": self.max_jobs,
                    "max_bytes": self.max_bytes, "removed": self.removed}  # fmt: skip

    def _enforce(self, keep: str | None) -> None:
        """Remove the oldest jobs (not ``keep``, not pinned) until both bounds hold.
        Called with the lock held."""
        used = sum(j.bytes for j in self._jobs.values())
        for job_id in list(self._jobs):
            if len(self._jobs) <= self.max_jobs and used <= self.max_bytes:
                return
            if job_id == keep or job_id in self._pins:
                continue
            job = self._jobs.pop(job_id)
            used -= job.bytes
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
            self.removed += 1
            log.info("storage: removed job %s (%d bytes) to stay within %d jobs / %d bytes",
                     job_id, job.bytes, self.max_jobs, self.max_bytes)  # fmt: skip
