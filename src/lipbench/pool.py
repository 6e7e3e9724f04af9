"""Replica pool: long-lived worker processes (`lipbench.replica`), each holding one loaded
Wav2Lip checkpoint, rendering frame ranges of jobs into video-only chunk files.

On CPU a replica is a process with its own torch thread count (replicas × threads ≤ cores
by default); on CUDA each replica process owns its own copy of the model on the GPU. The
pool starts once and is reused across jobs; a replica that dies mid-chunk is replaced and
its chunk retried once. A replica that is lost while the batch is being abandoned (an
error, Ctrl-C) is replaced lazily, when the next batch starts, never during shutdown.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chunk import Edges, ReplicaSpec
from .errors import LipbenchError
from .record import ChunkRow, ReplicaRow
from .replica import (
    Cancelled,
    ChunkTask,
    Done,
    Error,
    Failed,
    Message,
    Progress,
    Ready,
    Started,
    replica_main,
)

log = logging.getLogger("lipbench.pool")

START_TIMEOUT_S = 300.0
__all__ = ["Cancelled", "ChunkFailed", "ChunkTask", "ReplicaPool", "ReplicaSpec"]


class ChunkFailed(LipbenchError):
    pass


class _InProcess:
    """A replica hosted on a thread of this process (the process API the pool uses): for a
    one-replica pool it saves a second interpreter and a second torch import at start-up.
    It runs the same ``replica_main``; it cannot be killed, so a fault is not retried."""

    def __init__(self, target: Callable[..., None], args: tuple, name: str):
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.pid = os.getpid()
        self.exitcode: int | None = None

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def kill(self) -> None:  # a thread cannot be killed; its daemon flag ends it at exit
        pass


@dataclass
class _Replica:
    replica_id: int
    spec: ReplicaSpec
    process: Any
    tasks: Any
    conn: Any  # this replica's own result pipe (read end)
    cancel: Any  # an Event: the replica stops the chunk in hand at its next 8-frame tick
    row: ReplicaRow | None = None
    eof: bool = False

    def lost(self) -> bool:
        """Dead, once everything it sent has been read (a Done may still be waiting)."""
        return self.eof or (not self.process.is_alive() and not self.conn.poll())


@dataclass
class _Batch:
    """One ``render_chunks`` call: per-replica queues, what runs where, the results."""

    by_id: dict[int, ChunkTask]
    original: dict[int, int]  # pool-unique task id → the caller's task id
    queues: dict[int, list[ChunkTask]]
    running: dict[int, ChunkTask] = field(default_factory=dict)  # replica → task
    attempts: dict[int, int] = field(default_factory=dict)
    rows: dict[int, ChunkRow] = field(default_factory=dict)
    edges: dict[int, Edges] = field(default_factory=dict)
    progress: Callable[[int], None] | None = None


class ReplicaPool:
    """A fixed set of replicas. ``render_chunks`` runs tasks across them and returns rows."""

    def __init__(self, specs: list[ReplicaSpec], in_process: bool = False):
        if not specs:
            raise ValueError("a pool needs at least one replica")
        if in_process and len(specs) != 1:
            raise ValueError("only a one-replica pool can run in this process")
        self.specs = specs
        self.in_process = in_process
        self._ctx = mp.get_context("spawn")  # fork + torch threads is unsafe
        self._backlog: list[Message] = []  # messages read while waiting for a replica to start
        self.replicas: list[_Replica] = []
        self.restarts = 0
        self._ids = itertools.count()
        self.on_event: Callable[[str, dict], None] | None = None  # test/progress hook
        t0 = time.perf_counter()
        try:
            for i, spec in enumerate(specs):
                self.replicas.append(self._spawn(i, spec))
            for r in self.replicas:
                self._wait_ready(r)
        except BaseException:
            self.close()
            raise
        self.start_s = round(time.perf_counter() - t0, 3)

    @property
    def models(self) -> list[str]:
        return [s.model for s in self.specs]

    def _spawn(self, replica_id: int, spec: ReplicaSpec) -> _Replica:
        if self.in_process:
            tasks: Any = queue.Queue()
        else:
            tasks = self._ctx.Queue()
            # A replica that dies leaves its queue unread; without this the queue's feeder
            # thread would block the parent's exit forever, trying to flush the dead pipe.
            tasks.cancel_join_thread()
        # One result pipe per replica, never a shared queue: a replica killed while writing
        # would otherwise die holding the shared queue's lock and block every other writer.
        reader, writer = self._ctx.Pipe(duplex=False)
        name = f"replica-{replica_id}-{spec.model}"
        cancel = threading.Event() if self.in_process else self._ctx.Event()
        args = (replica_id, spec, tasks, writer, cancel)
        if self.in_process:
            proc: Any = _InProcess(replica_main, args, name)
            proc.start()
        else:
            proc = self._ctx.Process(target=replica_main, args=args, daemon=True, name=name)
            proc.start()
            writer.close()  # only the child writes; its death then shows as EOF here
        return _Replica(replica_id, spec, proc, tasks, reader, cancel)

    def _poll(self, timeout: float, backlog: bool = True) -> list[Message]:
        """Messages from any replica (the backlog first, unless ``backlog`` is False),
        waiting up to ``timeout``."""
        if backlog and self._backlog:
            out, self._backlog = self._backlog, []
            return out
        live = {r.conn: r for r in self.replicas if not r.eof}
        if not live:
            time.sleep(timeout)
            return []
        out = []
        for conn in mp_connection.wait(list(live), timeout):
            try:
                out.append(conn.recv())
            except Exception:  # noqa: BLE001 - EOF or a message cut off by a kill: the replica is gone
                live[conn].eof = True
        return out

    def _wait_ready(self, r: _Replica) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.replicas[r.replica_id].row:  # its Ready was read while waiting for another
                return
            msgs = self._poll(0.5, backlog=False)  # the backlog is for the render loop
            if not msgs and not r.process.is_alive():
                raise LipbenchError(
                    f"replica {r.replica_id} ({r.spec.model}) exited while loading (code {r.process.exitcode})"
                )
            for msg in msgs:
                if isinstance(msg, Failed):
                    text = msg.text.strip()
                    if "\n" in text:  # a traceback: keep its last line
                        text = f"replica {msg.replica} ({self.specs[msg.replica].model}) failed to start: {text.splitlines()[-1]}"
                    raise LipbenchError(text)
                if isinstance(msg, Ready):
                    self.replicas[msg.replica].row = msg.row
                else:  # another replica's work in progress: keep it for the render loop
                    self._backlog.append(msg)
        raise LipbenchError(f"replica {r.replica_id} did not start within {START_TIMEOUT_S:.0f} s")

    def replica_rows(self) -> list[ReplicaRow]:
        return [dataclasses.replace(r.row) for r in self.replicas if r.row]

    def pids(self) -> list[int]:
        return [r.process.pid for r in self.replicas if r.process.pid]

    def _emit(self, kind: str, data: dict) -> None:
        if self.on_event:
            self.on_event(kind, data)

    def _replace(self, r: _Replica) -> None:
        """Replace a dead replica with a fresh process of the same spec."""
        self.restarts += 1
        fresh = self._spawn(r.replica_id, r.spec)
        self.replicas[r.replica_id] = fresh
        self._wait_ready(fresh)

    def _revive(self) -> None:
        """Before a batch: replace replicas lost when an earlier batch was abandoned."""
        for r in list(self.replicas):
            if r.row is None or not r.process.is_alive():
                r.process.join(timeout=1)
                self._replace(r)

    def render_chunks(
        self,
        tasks: list[ChunkTask],
        assign: list[int],
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[dict[int, ChunkRow], dict[int, Edges]]:
        """Run ``tasks[i]`` on replica ``assign[i]`` (each replica works through its own queue,
        longest chunk first; a streamed job's in play order). Returns (rows, edges) keyed by task_id. A replica that dies
        mid-chunk is restarted and the chunk retried once; a second failure raises
        ChunkFailed naming the chunk. ``should_stop`` (polled twice a second) abandons the
        batch at the replicas' next 8-frame tick and raises Cancelled."""
        self._revive()
        # Pool-unique ids, so a late message from an aborted earlier batch is never taken
        # for one of this batch's chunks.
        original, renamed = {}, []
        for t in tasks:
            uid = next(self._ids)
            original[uid] = t.task_id
            renamed.append(dataclasses.replace(t, task_id=uid))
        b = _Batch({t.task_id: t for t in renamed}, original, {r.replica_id: [] for r in self.replicas})  # fmt: skip
        b.progress = progress
        b.attempts = {t.task_id: 0 for t in renamed}
        for t, rid in zip(renamed, assign, strict=True):
            b.queues[rid].append(t)
        # Longest chunk first finishes the batch soonest; a streamed job plays in order, so
        # there each replica renders in play order (stream.stall.segment_schedule assumes so).
        streamed = any(t.stream is not None for t in renamed)
        for q in b.queues.values():
            q.sort(key=(lambda t: t.start) if streamed else (lambda t: t.start - t.end))
        for rid in b.queues:
            self._feed(b, rid)
        try:
            while b.running:
                for msg in self._poll(0.5):
                    self._handle(b, msg)
                self._check_deaths(b)
                if should_stop and should_stop():
                    raise Cancelled(
                        "the job was cancelled", "its client went away; nothing was published"
                    )
        except BaseException:
            self._abandon(b)
            raise
        return (
            {original[k]: v for k, v in b.rows.items()},
            {original[k]: v for k, v in b.edges.items()},
        )

    def _feed(self, b: _Batch, rid: int) -> None:
        if rid not in b.running and b.queues[rid]:
            t = b.queues[rid].pop(0)
            b.attempts[t.task_id] += 1
            b.running[rid] = t
            self.replicas[rid].cancel.clear()
            self.replicas[rid].tasks.put(t)

    def _abandon(self, b: _Batch) -> None:
        """Stop this batch's chunks still in flight and remove their partial files. Each
        replica is asked to stop at its next 8-frame tick and stays warm; one that does not
        answer in time is killed (replaced when the next batch starts)."""
        for rid in b.running:
            self.replicas[rid].cancel.set()
        for rid, t in list(b.running.items()):
            r = self.replicas[rid]
            if not self._drain(r, t.task_id) and not isinstance(r.process, _InProcess):
                if r.process.is_alive():
                    r.process.kill()
                r.process.join()
                r.row = None
            _remove_partials(t.out_path)
        b.running.clear()

    def _drain(self, r: _Replica, task_id: int, timeout: float = 30.0) -> bool:
        """Wait until a replica reports the end of a cancelled chunk; False if it did not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and r.process.is_alive() and not r.eof:
            try:
                if r.conn.poll(0.2):
                    msg = r.conn.recv()
                    if isinstance(msg, Done | Error) and msg.task_id == task_id:
                        return True
            except (EOFError, OSError):
                r.eof = True
        return False

    def _check_deaths(self, b: _Batch) -> None:
        for rid, t in list(b.running.items()):
            r = self.replicas[rid]
            if not r.lost():
                continue
            if r.process.is_alive():  # its pipe broke mid-message: treat it as lost
                r.process.kill()
            r.process.join()
            code = r.process.exitcode
            _remove_partials(t.out_path)
            del b.running[rid]
            if b.attempts[t.task_id] >= 2:
                r.row = None  # replaced when the next batch starts, not now
                raise ChunkFailed(
                    f"chunk {t.chunk_index} (frames {t.start}–{t.end}) failed twice: replica {rid} ({r.spec.model}) died (exit code {code})",
                    "check memory (dmesg) and run again; the partial files were removed",
                ) from None
            log.warning(
                "replica %d died (exit %s) rendering chunk %d; retrying on a fresh replica",
                rid,
                code,
                t.chunk_index,
            )
            self._emit("replica_died", {"replica": rid, "chunk": t.chunk_index, "exitcode": code})
            self._replace(r)
            b.queues[rid].insert(0, t)
            self._feed(b, rid)

    def _handle(self, b: _Batch, msg: Message) -> None:
        """One message from a replica during a batch."""
        if isinstance(msg, Ready):
            self.replicas[msg.replica].row = msg.row
            return
        if isinstance(msg, Failed) or msg.task_id not in b.by_id:
            return  # from an aborted earlier batch
        t = b.by_id[msg.task_id]
        if isinstance(msg, Started):
            pid = self.replicas[msg.replica].process.pid
            self._emit("started", {"replica": msg.replica, "chunk": t.chunk_index, "pid": pid})
        elif isinstance(msg, Progress):
            if b.progress:
                b.progress(msg.frames)
        elif isinstance(msg, Done):
            msg.row.attempts = b.attempts[msg.task_id]
            b.rows[msg.task_id], b.edges[msg.task_id] = msg.row, msg.edges
            b.running.pop(msg.replica, None)
            self._feed(b, msg.replica)
        elif isinstance(msg, Error):
            _remove_partials(t.out_path)
            line = msg.text.strip().splitlines()[-1] if msg.text.strip() else "unknown error"
            raise ChunkFailed(
                f"chunk {t.chunk_index} (frames {t.start}–{t.end}) failed on replica {msg.replica} ({self.replicas[msg.replica].spec.model}): {line}"
            )

    def close(self) -> None:
        for r in self.replicas:
            try:
                r.tasks.put(None)
            except (ValueError, OSError):
                pass
        for r in self.replicas:
            r.process.join(timeout=10)
            if r.process.is_alive():
                r.process.kill()
                r.process.join()
            r.conn.close()
        self.replicas = []

    def __enter__(self) -> ReplicaPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove_partials(out_path: str) -> None:
    """A killed writer leaves its temp file (.<stem>.*.part.mp4) behind: remove it."""
    p = Path(out_path)
    for leftover in p.parent.glob(f".{p.stem}.*.part*"):
        leftover.unlink(missing_ok=True)
