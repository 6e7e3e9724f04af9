"""A replica process: loads one checkpoint once, then renders chunk tasks until told to stop.
Also the typed messages it exchanges with its pool (`lipbench.pool`).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from .chunk import load_renderer, render_chunk
from .errors import LipbenchError
from .memory import limit_malloc_arenas

# --- parent → replica ---------------------------------------------------------------------


@dataclass
class ChunkTask:
    task_id: int
    job: Any  # render.JobInputs of this chunk's frame range only (``JobInputs.for_range``)
    start: int
    end: int
    out_path: str
    encoder: Any  # video.EncoderSettings
    chunk_index: int = 0
    stream: Any = None  # stream.segments.StreamTarget: also write segments as frames render


# --- replica → parent ---------------------------------------------------------------------


@dataclass
class Ready:
    replica: int
    row: Any  # record.ReplicaRow


@dataclass
class Failed:  # could not start (bad checkpoint, bad options)
    replica: int
    text: str


@dataclass
class Started:
    replica: int
    task_id: int


@dataclass
class Progress:
    replica: int
    task_id: int
    frames: int


@dataclass
class Done:
    replica: int
    task_id: int
    row: Any  # record.ChunkRow
    edges: dict[str, Any]


@dataclass
class Error:  # the chunk failed inside a live replica
    replica: int
    task_id: int
    text: str


Message = Ready | Failed | Started | Progress | Done | Error


class Cancelled(LipbenchError):
    """A job stopped on purpose (Ctrl-C, or a server client that went away)."""

    @classmethod
    def client_gone(cls) -> Cancelled:
        """The job's caller asked it to stop (``Hooks.should_stop``)."""
        return cls("the job was cancelled", "its client went away; nothing was published")


def exit_with_parent(parent: int, every_s: float = 0.5) -> threading.Thread:
    """A replica process ends when its parent is gone, however the parent died (SIGKILL
    included): otherwise it would idle under init forever, holding ~1 GB. (Not
    PR_SET_PDEATHSIG: that fires when the parent's *thread* that started the replica ends,
    and a server starts pools from worker threads.) Its ffmpeg reads EOF and ends too."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    t = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    t.start()
    return t


def replica_main(replica_id: int, spec: Any, tasks: Any, results: Any, cancel: Any = None,
                 parent: int | None = None) -> None:  # fmt: skip
    """Worker: load the checkpoint once, then render tasks until a ``None`` task. ``cancel``
    (an Event) stops the chunk in hand at its next progress tick. ``parent``: the pid whose
    end ends this process (None: hosted in-process)."""
    # Ctrl-C reaches the whole process group: the parent decides, the replica just stops
    # when told (or is killed), so no traceback from here.
    if threading.current_thread() is threading.main_thread():  # not when hosted in-process
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        limit_malloc_arenas()  # a process of its own: before its threads allocate
        exit_with_parent(parent)
    try:
        loaded = load_renderer(spec)
    except LipbenchError as exc:
        results.send(Failed(replica_id, str(exc)))
        return
    except Exception:  # noqa: BLE001 - report any start-up failure to the parent
        results.send(Failed(replica_id, traceback.format_exc(limit=3)))
        return
    results.send(Ready(replica_id, loaded.replica_row(replica_id, spec)))

    identity = dict(model=spec.model, replica=replica_id, threads=spec.threads, device=spec.device)  # fmt: skip
    while True:
        task: ChunkTask | None = tasks.get()
        if task is None:
            return
        try:
            results.send(Started(replica_id, task.task_id))

            def tick(n: int, tid: int = task.task_id) -> None:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("the chunk was cancelled by its pool")
                results.send(Progress(replica_id, tid, n))

            row, edges = render_chunk(
                loaded.renderer, task.job, task.start, task.end, task.out_path, task.encoder,
                {**identity, "chunk": task.chunk_index}, tick, task.stream,
            )  # fmt: skip
            results.send(Done(replica_id, task.task_id, row, edges))
        except LipbenchError as exc:
            results.send(Error(replica_id, task.task_id, str(exc)))
        except Exception:  # noqa: BLE001 - the parent turns this into a clear chunk error
            results.send(Error(replica_id, task.task_id, traceback.format_exc(limit=4)))
