"""A bounded job queue: at most ``max_running`` jobs run (each in a worker thread), at most
``max_waiting`` wait for a slot, the rest are refused with ``QueueFull`` (HTTP 429).

A running job's slot is released when its *thread* returns, never when the request that
started it goes away, so a departed client cannot let a second job onto busy replicas. A
request cancelled while it waits gives its place up and its job never starts; one cancelled
while its job runs sets the job's cancel flag (the job stops at its next batch boundary
where the workbench supports it; see ``runner``). The one exception: a cancelled job that
``idle`` says holds no replicas and never will (it was still synthesising speech, say: see
``phase``) gives its slot back at once; its thread ends on its own, after the stage it is in.
At most ``max_running`` such threads drain at a time (beyond that a slot waits for its
thread, as before), so starting and cancelling jobs cannot pile up background work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("lipbench.server")

DEFAULT_JOB_S = 10.0  # Retry-After estimate before any job has finished


class QueueFull(Exception):
    """Every running and waiting slot is taken."""

    def __init__(self, running: int, waiting: int, retry_after: int):
        self.running, self.waiting, self.retry_after = running, waiting, retry_after
        super().__init__(f"the job queue is full ({running} running, {waiting} waiting)")


class JobQueue:
    def __init__(self, max_running: int, max_waiting: int):
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be ≥ 1 and max_waiting ≥ 0")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self.cancelled = 0  # waiting jobs dropped because their client left
        self.abandoned = 0  # running jobs whose client left (told to stop; output discarded)
        self.completed = 0
        self.draining = 0  # threads of cancelled jobs whose slot was given back early
        self._sem: asyncio.Semaphore | None = None
        # a thread per slot, and one per draining job
        self._executor = ThreadPoolExecutor(2 * max_running, thread_name_prefix="lipbench-job")
        self._durations: deque[float] = deque(maxlen=20)
        self._flags: set[threading.Event] = set()  # cancel flags of running jobs

    def _semaphore(self) -> asyncio.Semaphore:
        # Created on first use so it belongs to the server's event loop.
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_running)
        return self._sem

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: recent mean job time × jobs ahead / slots."""
        mean = statistics.fmean(self._durations) if self._durations else DEFAULT_JOB_S
        ahead = self.waiting + 1
        return max(1, math.ceil(mean * ahead / self.max_running))

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "waiting": self.waiting,
            "max_running": self.max_running,
            "max_waiting": self.max_waiting,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "abandoned": self.abandoned,
            "draining": self.draining,
        }

    async def run(
        self,
        fn: Callable[[], Any],
        cancel: threading.Event | None = None,
        on_abandon: Callable[[asyncio.Future], None] | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> Any:
        """Run ``fn`` in a worker thread once a slot is free; return its result.

        When the awaiting task is cancelled while ``fn`` runs, ``cancel`` is set (``fn`` may
        watch it) and ``on_abandon(future)`` is called on the event loop once the thread
        has returned.
        """
        self.admit()
        return await self._run_admitted(fn, cancel, on_abandon, idle)

    def admit(self) -> None:
        """Take a waiting place now or raise ``QueueFull``: synchronous, so a request that
        answers at once (a stream job) knows before it answers whether its job got in."""
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise QueueFull(self.running, self.waiting, self.retry_after())
        self.waiting += 1

    def submit(
        self,
        fn: Callable[[], Any],
        cancel: threading.Event | None = None,
        on_abandon: Callable[[asyncio.Future], None] | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> asyncio.Task:
        """``run`` as a task whose place is taken before this returns (``QueueFull`` is raised
        here, not in the task). Cancelling the task behaves as cancelling ``run``."""
        self.admit()
        started = False

        async def admitted() -> Any:
            nonlocal started
            started = True
            return await self._run_admitted(fn, cancel, on_abandon, idle)

        def never_started(t: asyncio.Task) -> None:
            if not started:  # cancelled before its first step: give the place back here
                self.waiting -= 1
                self.cancelled += 1

        task = asyncio.ensure_future(admitted())
        task.add_done_callback(never_started)
        return task

    async def _run_admitted(
        self,
        fn: Callable[[], Any],
        cancel: threading.Event | None,
        on_abandon: Callable[[asyncio.Future], None] | None,
        idle: Callable[[], bool] | None = None,
    ) -> Any:
        sem = self._semaphore()
        try:
            await sem.acquire()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.waiting -= 1
        self.running += 1
        flag = cancel or threading.Event()
        self._flags.add(flag)
        t0 = time.monotonic()
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        freed = False  # the slot was given back (on the event loop: no lock needed)

        def free_slot() -> None:
            nonlocal freed
            if not freed:
                freed = True
                self.running -= 1
                self.completed += 1
                self._flags.discard(flag)
                sem.release()

        def release(f: asyncio.Future) -> None:
            if freed:
                self.draining -= 1
            elif not f.cancelled() and f.exception() is None and not flag.is_set():
                self._durations.append(time.monotonic() - t0)
            free_slot()

        fut.add_done_callback(release)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.abandoned += 1
            flag.set()
            if not freed and idle is not None and self.draining < self.max_running and idle():
                self.draining += 1
                free_slot()  # it holds no replicas and will take none: its slot is free now
            fut.add_done_callback(_abandoned(on_abandon))
            raise

    def close(self) -> None:
        """Tell running jobs to stop; drop jobs not yet started."""
        for flag in list(self._flags):
            flag.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _abandoned(
    on_abandon: Callable[[asyncio.Future], None] | None,
) -> Callable[[asyncio.Future], None]:
    def done(f: asyncio.Future) -> None:
        if not f.cancelled() and f.exception() is not None:  # retrieve it: no "never retrieved"
            log.info("an abandoned job ended with: %s", f.exception())
        if on_abandon:
            on_abandon(f)

    return done
