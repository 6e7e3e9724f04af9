"""Fit avatar frames to what the encoder takes: at most ``max_side`` pixels on the long side
(downscaled with ``cv2.INTER_AREA``, aspect kept) and even width and height (H.264 in yuv420p
needs both even; an odd edge loses its last row/column, as the encoder's crop did before).

The same :class:`Fit` is applied to every frame of an avatar; its :meth:`Fit.content_hash`
folds the change into the avatar's hash, so the detection cache key changes exactly when the
frames do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from lipbench.errors import InputError

# Long side of the largest avatar frame we keep (1080p's width); config key face.max_side.
MAX_SIDE = 1920
MIN_MAX_SIDE = 64  # the schema's minimum: smaller would leave no room for a face crop


def check_max_side(max_side: Any) -> int:
    if isinstance(max_side, bool) or not isinstance(max_side, int | np.integer):
        max_side = None
    if max_side is None or max_side < MIN_MAX_SIDE:
        raise InputError(
            f"max_side (config key face.max_side) must be a whole number of pixels "
            f">= {MIN_MAX_SIDE}, got {max_side!r}",
            f"use {MAX_SIDE} (the default) or another size such as 1280",
        )
    return int(max_side)


def _even(v: int) -> int:
    # A 1-pixel side cannot be made even by cropping; it holds no face either way.
    return v if v < 2 else v - v % 2


@dataclass(frozen=True)
class Fit:
    """How frames of ``original`` (width, height) become ``size`` (width, height)."""

    original: tuple[int, int]
    size: tuple[int, int]
    scaled: bool  # True: resized (INTER_AREA); False: at most cropped to even

    @property
    def changes(self) -> bool:
        return self.size != self.original

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """The fitted frame (the input itself when nothing changes)."""
        if not self.changes:
            return frame
        if self.scaled:
            return cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        w, h = self.size
        return frame[:h, :w]

    def content_hash(self, source_hash: str) -> str:
        """The hash of the source bytes when frames are unchanged, else a hash of both."""
        if not self.changes:
            return source_hash
        (w0, h0), (w, h) = self.original, self.size
        how = "inter_area" if self.scaled else "crop"
        tag = f"{source_hash}|fit:{w0}x{h0}->{w}x{h}|{how}"
        return hashlib.sha256(tag.encode("utf-8")).hexdigest()


def plan_fit(width: int, height: int, max_side: int = MAX_SIDE) -> Fit:
    """The fit for a ``width`` x ``height`` frame (``max_side`` already checked)."""
    long_side = max(width, height)
    if long_side <= max_side:
        return Fit((width, height), (_even(width), _even(height)), scaled=False)
    scale = max_side / long_side
    # round() then down to even: the long side lands on max_side (or one below, if odd).
    w = _even(max(1, round(width * scale)))
    h = _even(max(1, round(height * scale)))
    return Fit((width, height), (w, h), scaled=True)
