"""Wall time of a run's named stages (tts, convert, detect, mel, split, infer, merge)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Wall time of named stages, in the order they ran."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - t, 4)

    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 4)
