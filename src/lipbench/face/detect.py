"""Face detection for a whole avatar: one box per frame, gaps filled, smoothed, cached."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lipbench.errors import FaceError
from lipbench.face.avatar import Avatar
from lipbench.face.boxes import (
    DEFAULT_PADS,
    FaceBoxes,
    check_detector,
    check_pads,
    check_smooth,
    pad_clamp,
    smooth_boxes,
)
from lipbench.face.cache import cache_path, detection_cache_key, read_cache, write_cache
from lipbench.face.haar import haar_faces, pick_face

log = logging.getLogger(__name__)

_NO_FACE_FIX = (
    "use a frontal, well-lit photo or video with one clearly visible face "
    "(at least about 12 % of the picture's short side), or the default avatar"
)


def _fill_gaps(raw: np.ndarray, found: np.ndarray) -> None:
    """Frames without a face borrow the nearest detected frame's box (earlier one on ties)."""
    hits = np.flatnonzero(found)
    for i in np.flatnonzero(~found):
        j = int(np.searchsorted(hits, i))
        cands = [hits[k] for k in (j - 1, j) if 0 <= k < len(hits)]
        raw[i] = raw[min(cands, key=lambda c: abs(int(c) - int(i)))]


def _detect(avatar: Avatar, pads: tuple[int, int, int, int], smooth: int) -> np.ndarray:
    w, h = avatar.size
    n = len(avatar)
    raw = np.zeros((n, 4), dtype=np.int64)
    found = np.zeros(n, dtype=bool)
    for i in range(n):
        where = avatar.source if n == 1 else f"frame {i} of {avatar.source}"
        rect = pick_face(haar_faces(avatar.frame(i)), where)
        if rect is not None:
            raw[i] = pad_clamp(rect, pads, w, h)
            found[i] = True
    if not found.any():
        what = "no face found in" if n == 1 else f"no face found in any of the {n} frames of"
        raise FaceError(f"{what} {avatar.source}", _NO_FACE_FIX)
    if not found.all():
        _fill_gaps(raw, found)
        log.info(
            "%d of %d frames of %s had no face; used the nearest frame's box",
            n - int(found.sum()),
            n,
            avatar.source,
        )
    boxes = smooth_boxes(raw, smooth)
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise FaceError(
            f"the padded face box is empty in {avatar.source} (pads {pads})",
            "use smaller (or non-negative) pads",
        )
    return boxes


def detect_faces(
    avatar: Avatar,
    detector: str = "haar",
    pads: Any = DEFAULT_PADS,
    smooth: int = 5,
    cache_dir: str | Path | None = None,
) -> FaceBoxes:
    """Find the face box in every avatar frame (one box for a static image).

    ``pads`` = (top, bottom, left, right) in pixels, applied to the raw detection and clamped
    to the frame; video boxes are then smoothed with a centred moving mean over ``smooth``
    frames. With ``cache_dir``, boxes are read from / written to ``cache_dir/<key>.json``
    (see :func:`~lipbench.face.cache.detection_cache_key`); an unusable cache file is ignored
    and rewritten.
    """
    name = check_detector(detector)
    pads_t = check_pads(pads)
    window = check_smooth(smooth)
    path: Path | None = None
    key = ""
    if cache_dir is not None:
        key = detection_cache_key(avatar, name, pads_t, window)
        path = cache_path(cache_dir, key)
        cached = read_cache(path, key, avatar)
        if cached is not None:
            return FaceBoxes(cached, name, pads_t, window, from_cache=True)
    fb = FaceBoxes(_detect(avatar, pads_t, window), name, pads_t, window)
    if path is not None:
        write_cache(path, key, avatar, fb)
    return fb
