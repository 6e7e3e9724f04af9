"""Warm replica pools kept across jobs (the server and the bench reuse them), each leased to
one job at a time: a replica never serves two jobs at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .chunk import ReplicaSpec
from .config import resolve_device
from .jobs import replica_device, visible_gpus
from .pool import ReplicaPool
from .request import Settings

log = logging.getLogger("lipbench.pipeline")

Key = tuple[tuple[str, ...], int]  # (models, threads per replica)


@dataclass(frozen=True)
class Lease:
    pool: ReplicaPool
    waited_s: float  # starting the pool and/or waiting for another job to give it back


class Pools:
    """Pools by (models, threads); started on first use."""

    def __init__(self, settings: Settings, in_process_single: bool = False):
        """``in_process_single``: a one-replica pool runs on a thread of this process (the
        CLI's sequential path starts faster: no second interpreter, no second torch import)."""
        self.settings = settings
        self.in_process_single = in_process_single
        self._pools: dict[Key, ReplicaPool] = {}
        self._leases: dict[Key, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, models: list[str] | tuple[str, ...], threads: int) -> ReplicaPool:
        """The warm pool for these models and threads (started on first use)."""
        key: Key = (tuple(models), threads)
        with self._guard:
            self._leases.setdefault(key, threading.Lock())
            if key not in self._pools:
                device = resolve_device(self.settings.job.device)
                gpus = visible_gpus(device)
                specs = [ReplicaSpec.for_model(self.settings, m, threads, replica_device(device, i, gpus))
                         for i, m in enumerate(models)]  # fmt: skip
                pool = ReplicaPool(specs, in_process=self.in_process_single and len(specs) == 1)
                for r in pool.replica_rows():
                    if not r.weights.trained:
                        log.warning("replica %d (%s): no checkpoint found — SEEDED RANDOM weights, output is not a trained lip-sync",
                                    r.replica, r.model)  # fmt: skip
                self._pools[key] = pool
            return self._pools[key]

    @contextmanager
    def lease(self, models: list[str] | tuple[str, ...], threads: int) -> Iterator[Lease]:
        """The pool for these models, held by the caller alone until the block ends."""
        t0 = time.perf_counter()
        pool = self.get(models, threads)
        with self._leases[(tuple(models), threads)]:
            yield Lease(pool, round(time.perf_counter() - t0, 4))

    def close(self) -> None:
        with self._guard:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()
