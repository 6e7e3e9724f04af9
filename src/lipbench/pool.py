"""Replica pool: long-lived worker processes (`lipbench.replica`), each holding one loaded
Wav2Lip checkpoint, rendering frame ranges of jobs into video-only chunk files.

On CPU a replica is a process with its own torch thread count (replicas × threads ≤ cores
by default); on CUDA each replica process owns its own copy of the model on the GPU. The
pool holds the replicas' lifetime: start, replace, close. One call's work (feeding, retry,
cancel, drain) is a ``batch.Batch``, which reaches the replicas through the ``batch.Host``
methods below. A replica lost while a batch is being abandoned (an error, Ctrl-C) is
replaced lazily, when the next batch starts, never during shutdown.
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
from dataclasses import dataclass
from typing import Any

from .batch import Batch, ChunkFailed, Edges
from .chunk import ReplicaSpec
from .errors import LipbenchError
from .record import ChunkRow, ReplicaRow
from .replica import Cancelled, ChunkTask, Done, Error, Failed, Message, Ready, replica_main
from .schedule import replica_queues

log = logging.getLogger("lipbench.pool")

START_TIMEOUT_S = 300.0
__all__ = ["Cancelled", "ChunkFailed", "ChunkTask", "ReplicaPool", "ReplicaSpec"]


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
            args = (*args, os.getpid())  # the replica ends when this process does
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
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> tuple[dict[int, ChunkRow], dict[int, Edges]]:
        """Render ``tasks`` (one per chunk, in chunk order) on the replicas, each replica its
        ``schedule.replica_queues`` queue. Returns (rows, edges) keyed by task_id. A replica
        that dies mid-chunk is restarted and the chunk retried once; a second failure raises
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
        streamed = any(t.stream is not None for t in renamed)
        queues = replica_queues([t.end - t.start for t in renamed], len(self.replicas), streamed)
        rows, edges = Batch(self, renamed, queues, progress, should_stop).run()
        return {original[k]: v for k, v in rows.items()}, {original[k]: v for k, v in edges.items()}

    # --- batch.Host: how a batch reaches the replicas ------------------------------------

    def model(self, rid: int) -> str:
        return self.replicas[rid].spec.model

    def send(self, rid: int, task: ChunkTask) -> None:
        self.replicas[rid].cancel.clear()
        self.replicas[rid].tasks.put(task)

    def poll(self, timeout: float) -> list[Message]:
        return self._poll(timeout)

    def ready(self, rid: int, row: Any) -> None:
        self.replicas[rid].row = row

    def lost(self, rid: int) -> bool:
        return self.replicas[rid].lost()

    def reap(self, rid: int) -> int | None:
        p = self.replicas[rid].process
        if p.is_alive():  # its pipe broke mid-message: treat it as lost
            p.kill()
        p.join()
        return p.exitcode

    def restart(self, rid: int) -> None:
        self._replace(self.replicas[rid])

    def cancel(self, rid: int) -> None:
        self.replicas[rid].cancel.set()

    def drain(self, rid: int, task_id: int, timeout: float = 30.0) -> bool:
        """Wait until a replica reports the end of a cancelled chunk; False if it did not."""
        r = self.replicas[rid]
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

    def discard(self, rid: int) -> None:
        r = self.replicas[rid]
        if isinstance(r.process, _InProcess):  # a thread cannot be killed: leave it be
            return
        if r.process.is_alive():
            r.process.kill()
        r.process.join()
        r.row = None

    def pid(self, rid: int) -> int | None:
        return self.replicas[rid].process.pid

    def emit(self, kind: str, data: dict) -> None:
        if self.on_event:
            self.on_event(kind, data)

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
