"""Face boxes for one job: detect on the avatar frames the audio uses (cached), track one
person, pad, smooth, and weigh the patch (0 where the face is absent, fading at gap edges)."""

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
from lipbench.face.cache import ROW, cache_path, detection_cache_key, read_cache, write_cache
from lipbench.face.haar import haar_faces
from lipbench.face.settings import resolve_cache_dir
from lipbench.face.timeline import Timeline
from lipbench.face.track import track_face

log = logging.getLogger(__name__)


def detect_frame(frame: np.ndarray, detector: str) -> np.ndarray:
    """Every face in one frame as K x 15 rows (see :data:`lipbench.face.cache.ROW`)."""
    if detector == "yunet":
        from lipbench.face.yunet import yunet_faces

        return yunet_faces(frame)
    rects = haar_faces(frame).astype(np.float64)
    rows = np.full((len(rects), ROW), np.nan)
    rows[:, :4] = rects
    rows[:, 14] = 1.0
    return rows


def _interpolate(rects: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Absent rows (NaN) take the box linearly between their neighbours (by frame index),
    the nearest one past either end: the crop glides across a gap instead of jumping."""
    ok = ~np.isnan(rects[:, 0])
    if ok.all():
        return rects
    out = rects.copy()
    for c in range(4):
        out[:, c] = np.interp(pos, pos[ok], rects[ok, c])
    return out


def patch_weights(present: np.ndarray, pos: np.ndarray, fade_frames: float) -> np.ndarray:
    """0 where the face is absent; ramps up over ``fade_frames`` avatar frames next to an
    absence (d / (fade_frames + 1) at distance d), else 1."""
    alphas = present.astype(np.float64)
    absent = pos[~present]
    if len(absent) == 0 or fade_frames <= 0:
        return alphas
    j = np.searchsorted(absent, pos)
    left = np.abs(pos - absent[np.maximum(j - 1, 0)])
    right = np.abs(absent[np.minimum(j, len(absent) - 1)] - pos)
    dist = np.minimum(left, right).astype(np.float64)
    return np.where(present, np.minimum(1.0, dist / (fade_frames + 1.0)), 0.0)


def _detections(
    avatar: Avatar, name: str, used: np.ndarray, cache_dir: str | Path | None
) -> tuple[dict[int, np.ndarray], bool]:
    cached: dict[int, np.ndarray] = {}
    path: Path | None = None
    key = ""
    if cache_dir is not None:
        key = detection_cache_key(avatar, name)
        path = cache_path(cache_dir, key)
        cached = read_cache(path, key, avatar)
    todo = [int(k) for k in used if int(k) not in cached]
    try:
        for k in todo:  # ascending: a video is decoded forward, once
            cached[k] = detect_frame(avatar.frame(k), name)
    finally:
        avatar.release()  # the job's replicas read frames themselves
    if todo and path is not None:
        write_cache(path, key, avatar, name, cached)
    if todo and not avatar.is_static:
        log.info("face detection (%s) on %d frames of %s", name, len(todo), avatar.source)
    return cached, not todo


def detect_faces(
    avatar: Avatar,
    detector: str = "yunet",
    pads: Any = DEFAULT_PADS,
    smooth: int = 5,
    cache_dir: str | Path | None = None,
    *,
    n_out: int | None = None,
    fps: float | None = None,
    loop: str = "pingpong",
    select: str = "auto",
    fade_s: float = 0.2,
) -> FaceBoxes:
    """The tracked face for a job of ``n_out`` output frames at ``fps``.

    Only the avatar frames those output frames show are looked at (default: every frame of
    the avatar, at its own rate). ``pads`` = (top, bottom, left, right) in pixels, applied
    to the raw detection and clamped to the frame; video boxes are then smoothed with a
    centred moving mean over ``smooth`` used frames. With ``cache_dir`` the raw detections
    are read from / added to ``cache_dir/<key>.json``. FaceError when no frame has a face
    or (``select`` auto) two comparable faces are there throughout.
    """
    name = check_detector(detector)
    pads_t = check_pads(pads)
    window = check_smooth(smooth)
    if avatar.is_static:
        timeline = Timeline(1, 1.0, float(fps or 1.0), loop)
    else:
        assert avatar.fps is not None
        timeline = Timeline(len(avatar), avatar.fps, float(fps or avatar.fps), loop)
    n = len(avatar) if n_out is None else max(1, int(n_out))
    used = timeline.used(n)
    # "auto" / "none" as the config spells them, never a folder named "auto" here
    dets, from_cache = _detections(avatar, name, used, resolve_cache_dir(cache_dir))

    def where(j: int) -> str:
        return avatar.source if avatar.is_static else f"frame {int(used[j])} of {avatar.source}"

    track = track_face([dets[int(k)] for k in used], select, where, avatar.source)
    present = track.present
    w, h = avatar.size
    rects = _interpolate(track.rects, used.astype(np.float64))
    raw = np.array([pad_clamp(np.rint(r), pads_t, w, h) for r in rects], dtype=np.int64)
    boxes = smooth_boxes(raw, window)
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise FaceError(
            f"the padded face box is empty in {avatar.source} (pads {pads_t})",
            "use smaller (or non-negative) pads",
        )
    fade = float(fade_s) * (avatar.fps or 0.0)
    alphas = patch_weights(present, used, fade)
    if not present.all():
        log.info(
            "%d of %d used frames of %s have no face: written unchanged (patch fades over "
            "%.2f s at each gap's edges)", int((~present).sum()), len(used), avatar.source,
            float(fade_s),
        )  # fmt: skip
    return FaceBoxes(
        boxes, name, pads_t, window, from_cache, used.astype(np.int64), alphas,
        track.landmarks, timeline, n,
    )  # fmt: skip
