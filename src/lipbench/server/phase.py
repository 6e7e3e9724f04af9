"""Whether a running job holds replicas yet, so that a job whose client left while it was
still synthesising speech (or converting, detecting the face, planning) gives its queue slot
back at once instead of when that stage ends.

A job leases its replicas (``Workbench.pools.lease``) only after those stages. The server
wraps its workbench's pools (``watch_leases``) so that each job's lease first passes by the
job's ``JobPhase``: a job whose cancel flag is set is refused its lease there, and one that
got it is marked as holding replicas — both under one lock, so the queue's question "may this
cancelled job's slot be freed now?" (``holds_no_replicas``) and the lease never race. A freed
job's thread goes on until the pipeline's next stop check (after the stage it is in) or the
refused lease, whichever comes first; it never reaches a replica. A workbench without
``pools.lease`` keeps the queue's plain rule: the slot frees when the thread returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import LipbenchError

T = TypeVar("T")
_current = threading.local()


class JobPhase:
    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.leased = False
        self._lock = threading.Lock()

    def holds_no_replicas(self) -> bool:
        """Asked once the cancel flag is set: True when the job has no lease and will get none."""
        with self._lock:
            return not self.leased

    def take_lease(self) -> None:
        with self._lock:
            if self.cancel.is_set():
                raise LipbenchError(
                    "the job was cancelled before it leased its replicas",
                    "nothing to do: its client went away; nothing was published",
                )
            self.leased = True

    def run(self, fn: Callable[[], T]) -> T:
        """``fn`` (the job's work) in this thread, its leases checked against this phase."""
        _current.phase = self
        try:
            return fn()
        finally:
            _current.phase = None


class LeaseWatch:
    """A workbench's pools, whose ``lease`` first asks the calling job's ``JobPhase``."""

    def __init__(self, pools: Any):
        self._pools = pools

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pools, name)

    @contextmanager
    def lease(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        phase: JobPhase | None = getattr(_current, "phase", None)
        if phase is not None:
            phase.take_lease()
        with self._pools.lease(*args, **kwargs) as got:
            yield got


def watch_leases(wb: Any) -> bool:
    """Wrap ``wb.pools`` (once); False when the workbench has no ``pools.lease``."""
    pools = getattr(wb, "pools", None)
    if isinstance(pools, LeaseWatch):
        return True
    if pools is None or not callable(getattr(pools, "lease", None)):
        return False
    wb.pools = LeaseWatch(pools)
    return True
