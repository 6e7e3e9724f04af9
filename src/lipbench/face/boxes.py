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
from lipbench.face.timeline import Timeline

DEFAULT_PADS: tuple[int, int, int, int] = (0, 10, 0, 0)
DETECTORS = ("yunet", "haar", "s3fd")
S3FD_WEIGHTS = Path("weights") / "s3fd.pth"


@dataclass(frozen=True)
class FaceSummary:
    """What run.json says about the face track (``face`` section of the record)."""

    detector: str
    frames: int  # output frames
    frames_without_face: int  # output frames written unchanged (patch weight 0)
    ranges_without_face: list[tuple[int, int]]  # [start, end) output frame ranges
    frames_faded: int  # output frames with a patch weight strictly between 0 and 1
    avatar_frames_used: int


@dataclass
class FaceBoxes:
    """The tracked face of one job: a padded, clamped, smoothed box per used avatar frame,
    its landmarks and its patch weight, and the :class:`Timeline` that maps output frames
    to avatar frames. Every accessor takes a global output frame index ``i``.

    ``index`` (sorted avatar frame indices of the rows; default ``0..K-1``), ``alphas``
    (patch weight per row in [0, 1]; default 1) and ``timeline`` (default: output frame i
    shows row ``i % K``) keep the old three-argument form working for a still image.
    """

    boxes: np.ndarray  # K x 4 int (x1, y1, x2, y2)
    detector: str
    pads: tuple[int, int, int, int]
    smooth: int = 1
    from_cache: bool = field(default=False, compare=False)
    index: np.ndarray | None = None  # K avatar frame indices, ascending
    alphas: np.ndarray | None = None  # K floats in [0, 1]; 0 = face absent, frame untouched
    landmarks: np.ndarray | None = None  # K x 10 float (NaN when the detector has none)
    timeline: Timeline | None = None
    n_out: int | None = None  # output frames of the job (None: as many as rows)

    def __post_init__(self) -> None:
        k = int(self.boxes.shape[0])
        if self.index is None:
            self.index = np.arange(k, dtype=np.int64)
        if self.alphas is None:
            self.alphas = np.ones(k)
        if self.landmarks is None:
            self.landmarks = np.full((k, 10), np.nan)
        if self.timeline is None:
            self.timeline = Timeline(k, 1.0, 1.0, "repeat")
        if self.n_out is None:
            self.n_out = k

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def avatar_index(self, i: int) -> int:
        """The avatar frame output frame ``i`` shows."""
        assert self.timeline is not None
        return int(self.timeline.avatar_index(int(i)))

    def _row(self, i: int) -> int:
        assert self.index is not None
        k = self.avatar_index(i)
        r = int(np.searchsorted(self.index, k))
        if r >= len(self.index) or self.index[r] != k:
            raise IndexError(f"output frame {i} (avatar frame {k}) is not in these face boxes")
        return r

    def box(self, i: int) -> tuple[int, int, int, int]:
        """Box for global output frame index ``i``."""
        if i < 0:
            raise IndexError(f"frame index must be >= 0, got {i}")
        x1, y1, x2, y2 = (int(v) for v in self.boxes[self._row(i)])
        return x1, y1, x2, y2

    def alpha(self, i: int) -> float:
        """Patch weight for output frame ``i``: 0 = no face (frame written unchanged),
        1 = the generated face fully pasted, between = fading in/out at a gap's edge."""
        assert self.alphas is not None
        return float(self.alphas[self._row(i)])

    def landmarks_at(self, i: int) -> np.ndarray:
        """The tracked face's five landmarks (x, y pairs; NaN for Haar) for output frame i."""
        assert self.landmarks is not None
        return self.landmarks[self._row(i)].reshape(5, 2)

    def for_range(self, start: int, end: int) -> FaceBoxes:
        """Only the rows output frames [start, end) use (a chunk task carries its chunk)."""
        assert self.timeline is not None and self.index is not None
        need = np.unique(self.timeline.avatar_index(np.arange(start, end)))
        rows = np.minimum(np.searchsorted(self.index, need), len(self.index) - 1)
        rows = rows[self.index[rows] == need]  # rows this object has (all, for a whole job)
        assert self.alphas is not None and self.landmarks is not None
        return FaceBoxes(
            self.boxes[rows].copy(), self.detector, self.pads, self.smooth, self.from_cache,
            self.index[rows].copy(), self.alphas[rows].copy(), self.landmarks[rows].copy(),
            self.timeline, self.n_out,
        )  # fmt: skip

    def summary(self) -> FaceSummary:
        """Faceless and faded output frames over the whole job (needs all rows)."""
        assert self.timeline is not None and self.index is not None and self.alphas is not None
        n = int(self.n_out or 0)
        k = self.timeline.avatar_index(np.arange(n))
        rows = np.searchsorted(self.index, k)
        a = self.alphas[np.minimum(rows, len(self.index) - 1)] if n else np.zeros(0)
        none = a <= 0
        edges = np.flatnonzero(np.diff(np.concatenate([[0], none.astype(np.int8), [0]])))
        ranges = [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]
        return FaceSummary(
            detector=self.detector,
            frames=n,
            frames_without_face=int(none.sum()),
            ranges_without_face=ranges,
            frames_faded=int(((a > 0) & (a < 1)).sum()),
            avatar_frames_used=len(np.unique(k)),
        )

    def faceless_summary(self) -> dict[str, Any]:
        """:meth:`summary` as a JSON-ready dict (ranges as [start, end) lists)."""
        s = self.summary()
        return {
            "detector": s.detector,
            "frames": s.frames,
            "frames_without_face": s.frames_without_face,
            "ranges_without_face": [list(r) for r in s.ranges_without_face],
            "frames_faded": s.frames_faded,
            "avatar_frames_used": s.avatar_frames_used,
        }


def check_detector(detector: str) -> str:
    name = str(detector).strip().lower()
    if name == "yunet":
        from lipbench.face.yunet import model_path

        model_path()  # present and verified, or one InputError line
        return name
    if name == "haar":
        return name
    if name == "s3fd":
        if not S3FD_WEIGHTS.is_file():
            raise InputError(
                f"the s3fd face detector needs {S3FD_WEIGHTS}, which is missing",
                "use detector 'yunet' (the default) or 'haar'",
            )
        raise InputError(
            "the s3fd face detector is not implemented in this build",
            "use detector 'yunet' (the default) or 'haar'",
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
