"""Face boxes: the :class:`FaceBoxes` result, the checks on detection settings, and the box
geometry (pad and clamp to the frame, smooth over time).

A box is ``(x1, y1, x2, y2)`` in full-frame pixels, exclusive at x2/y2, already padded with
``pads = (top, bottom, left, right)`` and clamped to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lipbench.errors import InputError

DEFAULT_PADS: tuple[int, int, int, int] = (0, 10, 0, 0)
DETECTORS = ("haar", "s3fd")
S3FD_WEIGHTS = Path("weights") / "s3fd.pth"


@dataclass
class FaceBoxes:
    """One padded, clamped (and, for video, smoothed) box per avatar frame."""

    boxes: np.ndarray  # N x 4 int (x1, y1, x2, y2)
    detector: str
    pads: tuple[int, int, int, int]
    smooth: int = 1
    from_cache: bool = field(default=False, compare=False)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def box(self, i: int) -> tuple[int, int, int, int]:
        """Box for global output frame index ``i`` (loops like ``Avatar.frame``)."""
        if i < 0:
            raise IndexError(f"frame index must be >= 0, got {i}")
        x1, y1, x2, y2 = (int(v) for v in self.boxes[i % len(self.boxes)])
        return x1, y1, x2, y2


def check_detector(detector: str) -> str:
    name = str(detector).strip().lower()
    if name == "haar":
        return name
    if name == "s3fd":
        if not S3FD_WEIGHTS.is_file():
            raise InputError(
                f"the s3fd face detector needs {S3FD_WEIGHTS}, which is missing",
                "use detector 'haar' (works offline, no weights)",
            )
        raise InputError(
            "the s3fd face detector is not implemented in this build",
            "use detector 'haar' (works offline, no weights)",
        )
    raise InputError(
        f"unknown face detector {detector!r}", f"choose one of: {', '.join(DETECTORS)}"
    )


def check_pads(pads: Any) -> tuple[int, int, int, int]:
    try:
        vals = tuple(int(v) for v in pads)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 4:
        raise InputError(
            f"pads must be four integers (top, bottom, left, right), got {pads!r}",
            "e.g. pads=(0, 10, 0, 0)",
        )
    return vals  # type: ignore[return-value]


def check_smooth(smooth: Any) -> int:
    if isinstance(smooth, bool) or not isinstance(smooth, int | np.integer) or smooth < 0:
        raise InputError(
            f"smooth must be a whole number of frames >= 0, got {smooth!r}",
            "use 5 (the Wav2Lip default) or 1 to turn smoothing off",
        )
    return max(1, int(smooth))


def pad_clamp(
    rect: np.ndarray, pads: tuple[int, int, int, int], width: int, height: int
) -> list[int]:
    """(x, y, w, h) → padded (x1, y1, x2, y2), clamped to a ``width`` x ``height`` frame."""
    x, y, w, h = (int(v) for v in rect)
    top, bottom, left, right = pads
    return [
        max(0, x - left),
        max(0, y - top),
        min(width, x + w + right),
        min(height, y + h + bottom),
    ]


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean over ``window`` frames; the window is clipped at both ends."""
    n = len(boxes)
    if window <= 1 or n <= 1:
        return boxes.copy()
    before, after = (window - 1) // 2, window // 2
    csum = np.vstack([np.zeros((1, 4)), np.cumsum(boxes.astype(np.float64), axis=0)])
    out = np.empty((n, 4), dtype=np.float64)
    for i in range(n):
        lo, hi = max(0, i - before), min(n, i + after + 1)
        out[i] = (csum[hi] - csum[lo]) / (hi - lo)
    return np.rint(out).astype(np.int64)
