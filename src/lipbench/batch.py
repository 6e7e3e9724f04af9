"""One ``render_chunks`` call on a replica pool: each replica works through its own queue
(``schedule.replica_queues``); a chunk whose replica died is retried once on a fresh one; a
cancelled or failed call stops the chunks in flight and removes their partial files.

The batch talks to the replicas only through ``Host`` (``pool.ReplicaPool`` implements it),
so its feeding, retry, cancel and drain logic is tested with a fake host.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .errors import LipbenchError
from .record import ChunkRow
from .replica import Cancelled, ChunkTask, Done, Error, Failed, Message, Progress, Ready, Started

log = logging.getLogger("lipbench.pool")

Edges = dict[str, Any]
POLL_S = 0.5  # how often a batch checks for dead replicas and ``should_stop``


class ChunkFailed(LipbenchError):
    pass


class Host(Protocol):
    """What a batch needs from the replicas it runs on."""

    def model(self, rid: int) -> str: ...
    def send(self, rid: int, task: ChunkTask) -> None: ...  # clears its cancel flag first
    def poll(self, timeout: float) -> list[Message]: ...
    def ready(self, rid: int, row: Any) -> None: ...  # a (re)started replica's Ready
    def lost(self, rid: int) -> bool: ...  # dead, with everything it sent read
    def reap(self, rid: int) -> int | None: ...  # kill if needed, join; its exit code
    def restart(self, rid: int) -> None: ...  # a fresh replica in its place, ready
    def cancel(self, rid: int) -> None: ...  # stop the chunk in hand at the next tick
    def drain(self, rid: int, task_id: int) -> bool: ...  # its end of a cancelled chunk came
    def discard(self, rid: int) -> None: ...  # unresponsive: kill; replaced before next batch
    def pid(self, rid: int) -> int | None: ...
    def emit(self, kind: str, data: dict) -> None: ...


class Batch:
    """Run ``tasks`` (pool-unique task ids) on the replicas of ``host``: ``queues[r]`` lists,
    in order, the indices into ``tasks`` that replica r renders."""

    def __init__(
        self,
        host: Host,
        tasks: list[ChunkTask],
        queues: list[list[int]],
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        self.host = host
        self.by_id = {t.task_id: t for t in tasks}
        self.queues = {rid: [tasks[i] for i in q] for rid, q in enumerate(queues)}
        self.running: dict[int, ChunkTask] = {}  # replica → task in hand
        self.attempts = {t.task_id: 0 for t in tasks}
        self.rows: dict[int, ChunkRow] = {}
        self.edges: dict[int, Edges] = {}
        self.progress = progress
        self.should_stop = should_stop

    def run(self) -> tuple[dict[int, ChunkRow], dict[int, Edges]]:
        """Rows and edge frames keyed by task id; raises ChunkFailed or Cancelled (after
        abandoning what is in flight)."""
        for rid in self.queues:
            self._feed(rid)
        try:
            while self.running:
                for msg in self.host.poll(POLL_S):
                    self._handle(msg)
                self._check_deaths()
                if self.should_stop and self.should_stop():
                    raise Cancelled.client_gone()
        except BaseException:
            self._abandon()
            raise
        return self.rows, self.edges

    def _feed(self, rid: int) -> None:
        if rid not in self.running and self.queues[rid]:
            t = self.queues[rid].pop(0)
            self.attempts[t.task_id] += 1
            self.running[rid] = t
            self.host.send(rid, t)

    def _handle(self, msg: Message) -> None:
        if isinstance(msg, Ready):
            self.host.ready(msg.replica, msg.row)
            return
        if isinstance(msg, Failed) or msg.task_id not in self.by_id:
            return  # from an aborted earlier batch
        t = self.by_id[msg.task_id]
        if isinstance(msg, Started):
            self.host.emit("started", {"replica": msg.replica, "chunk": t.chunk_index, "pid": self.host.pid(msg.replica)})  # fmt: skip
        elif isinstance(msg, Progress):
            if self.progress:
                self.progress(msg.frames)
        elif isinstance(msg, Done):
            self.rows[msg.task_id] = dataclasses.replace(
                msg.row, attempts=self.attempts[msg.task_id]
            )
            self.edges[msg.task_id] = msg.edges
            self.running.pop(msg.replica, None)
            self._feed(msg.replica)
        elif isinstance(msg, Error):
            remove_partials(t.out_path)
            line = msg.text.strip().splitlines()[-1] if msg.text.strip() else "unknown error"
            raise ChunkFailed(
                f"chunk {t.chunk_index} (frames {t.start}–{t.end}) failed on replica {msg.replica} ({self.host.model(msg.replica)}): {line}"
            )

    def _check_deaths(self) -> None:
        for rid, t in list(self.running.items()):
            if not self.host.lost(rid):
                continue
            code = self.host.reap(rid)
            remove_partials(t.out_path)
            del self.running[rid]
            if self.attempts[t.task_id] >= 2:
                self.host.discard(rid)  # replaced when the next batch starts, not now
                raise ChunkFailed(
                    f"chunk {t.chunk_index} (frames {t.start}–{t.end}) failed twice: replica {rid} ({self.host.model(rid)}) died (exit code {code})",
                    "check memory (dmesg) and run again; the partial files were removed",
                ) from None
            log.warning("replica %d died (exit %s) rendering chunk %d; retrying on a fresh replica",
                        rid, code, t.chunk_index)  # fmt: skip
            self.host.emit("replica_died", {"replica": rid, "chunk": t.chunk_index, "exitcode": code})  # fmt: skip
            self.host.restart(rid)
            self.queues[rid].insert(0, t)
            self._feed(rid)

    def _abandon(self) -> None:
        """Stop the chunks still in flight and remove their partial files. Each replica is
        asked to stop at its next 8-frame tick and stays warm; one that does not answer in
        time is discarded (replaced when the next batch starts)."""
        for rid in self.running:
            self.host.cancel(rid)
        for rid, t in list(self.running.items()):
            if not self.host.drain(rid, t.task_id):
                self.host.discard(rid)
            remove_partials(t.out_path)
        self.running.clear()


def remove_partials(out_path: str) -> None:
    """A killed writer leaves its temp file (.<stem>.*.part.mp4) behind: remove it."""
    p = Path(out_path)
    for leftover in p.parent.glob(f".{p.stem}.*.part*"):
        leftover.unlink(missing_ok=True)
