"""Which avatar frame each output frame shows: sampled by time, looped forward and back.

Output frame ``i`` is at ``i / out_fps`` seconds; it shows the avatar frame on screen at that
moment, ``floor(t * avatar_fps)``, so a 30 or 60 fps avatar keeps its speed in a 25 fps video.
Audio longer than the avatar plays it forward, then backward, then forward again
(``pingpong``: no jump) or from the start again (``repeat``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# floor(i * ratio) must not lose a frame to 80/3-style rounding (e.g. 25 → 30 fps).
_EPS = 1e-6


@dataclass(frozen=True)
class Timeline:
    n_avatar: int
    avatar_fps: float
    out_fps: float
    loop: str = "pingpong"

    def __post_init__(self) -> None:
        if self.n_avatar < 1 or not self.avatar_fps > 0 or not self.out_fps > 0:
            raise ValueError(f"bad timeline {self}")
        if self.loop not in ("pingpong", "repeat"):
            raise ValueError(f"unknown loop {self.loop!r}")

    def avatar_index(self, i: int | np.ndarray) -> np.ndarray:
        """Avatar frame index (int64 array, or 0-d for a scalar) for output frame(s) ``i``."""
        i = np.asarray(i, dtype=np.int64)
        if np.any(i < 0):
            raise IndexError(f"frame index must be >= 0, got {int(i.min())}")
        n = self.n_avatar
        if n == 1:
            return np.zeros_like(i)
        p = np.floor(i * (self.avatar_fps / self.out_fps) + _EPS).astype(np.int64)
        if self.loop == "repeat":
            return p % n
        period = 2 * n - 2
        q = p % period
        return np.where(q < n, q, period - q)

    def used(self, n_out: int) -> np.ndarray:
        """Sorted unique avatar frames that output frames [0, n_out) show."""
        return np.unique(self.avatar_index(np.arange(max(0, n_out))))
