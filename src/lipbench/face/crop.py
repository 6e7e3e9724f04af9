"""Cut the face out of a frame at Wav2Lip's input size, and paste a generated face back
(as the reference does, a hard rectangle, or through a feathered mask)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

# Wav2Lip's face crop: FACE_SIZE x FACE_SIZE pixels. The one definition in lipbench.
FACE_SIZE = 96
# Feathered paste: the mask ramps from 0 at the box's edge to 1 over this share of the box's
# shorter side (16 px for a 96 px box), so a patch 30 levels off its surroundings steps by
# < 2 levels per pixel instead of 30 at once; the centre (mouth, nose) is pasted as is.
FEATHER = 1 / 6
BLENDS = ("feather", "box")


def feather_width(width: int, height: int) -> int:
    """Pixels over which the feathered mask ramps: FEATHER x the shorter side, at least 2."""
    return max(2, round(FEATHER * min(width, height)))


@lru_cache(maxsize=64)
def feather_mask(width: int, height: int) -> np.ndarray:
    """height x width x 1 float32 weights: (d + 0.5) / f at d pixels inside the box's
    edge (f = :func:`feather_width`), 1 from f on. Read-only."""
    f = float(feather_width(width, height))
    dx = np.minimum(np.arange(width), np.arange(width)[::-1])
    dy = np.minimum(np.arange(height), np.arange(height)[::-1])
    d = np.minimum(dy[:, None], dx[None, :]).astype(np.float32)
    m = np.minimum(1.0, (d + 0.5) / np.float32(f))[:, :, None].astype(np.float32)
    m.flags.writeable = False
    return m


def _box_in(frame: np.ndarray, box: Any) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(v) for v in box)
    h, w = frame.shape[:2]
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(f"box {(x1, y1, x2, y2)} is empty or outside the {w}x{h} frame")
    return x1, y1, x2, y2


def crop_face(frame: np.ndarray, box: Any) -> np.ndarray:
    """The box's pixels resized to FACE_SIZE x FACE_SIZE (bilinear), BGR uint8."""
    x1, y1, x2, y2 = _box_in(frame, box)
    return cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)


def paste_face(
    frame: np.ndarray,
    box: Any,
    face96: np.ndarray,
    *,
    inplace: bool = False,
    alpha: float = 1.0,
    blend: str = "box",
) -> np.ndarray:
    """Resize a generated face (FACE_SIZE² BGR uint8) to the box and write it at the box.

    ``blend="box"`` writes the rectangle as the reference does (exactly, when ``alpha`` is
    1); ``"feather"`` mixes it in through :func:`feather_mask`. ``alpha`` in [0, 1] scales
    the patch's weight (0: the frame is returned untouched, a copy unless ``inplace``).
    Returns a new frame by default (avatar frames are read-only and shared between output
    frames); with ``inplace=True`` writes into ``frame`` and returns it. Pixels outside the
    box are untouched.
    """
    x1, y1, x2, y2 = _box_in(frame, box)
    if face96.dtype != np.uint8 or face96.ndim != frame.ndim:
        raise ValueError(
            f"face must be uint8 with {frame.ndim} dims, got {face96.dtype} {face96.shape}"
        )
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    out = frame if inplace else frame.copy()
    if alpha <= 0:
        return out
    patch = cv2.resize(face96, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    patch = patch.reshape(out[y1:y2, x1:x2].shape)
    if blend == "box" and alpha >= 1:
        out[y1:y2, x1:x2] = patch
        return out
    bw, bh = x2 - x1, y2 - y1
    f = feather_width(bw, bh)
    if blend == "feather" and alpha >= 1 and 2 * f < min(bw, bh):
        # the mask is 1 inside the band: mix only the four border strips, copy the rest
        # (same pixels as mixing the whole box, a fraction of the work)
        roi = out[y1:y2, x1:x2]
        strips = [
            (slice(0, f), slice(0, bw)), (slice(bh - f, bh), slice(0, bw)),
            (slice(f, bh - f), slice(0, f)), (slice(f, bh - f), slice(bw - f, bw)),
        ]  # fmt: skip
        m = feather_mask(bw, bh)
        mixed = [_mix(roi[r], patch[r], m[r]) for r in strips]
        roi[...] = patch
        for r, px in zip(strips, mixed, strict=True):
            roi[r] = px
        return out
    w = np.float32(min(1.0, alpha))
    mask = feather_mask(bw, bh) * w if blend == "feather" else w
    out[y1:y2, x1:x2] = _mix(out[y1:y2, x1:x2], patch, mask)
    return out


def _mix(under: np.ndarray, over: np.ndarray, m: np.ndarray | np.float32) -> np.ndarray:
    """under + (over − under) x m, rounded to uint8 (m: weights, h x w x 1, or a scalar)."""
    if under.ndim == 2 and isinstance(m, np.ndarray):
        m = m[:, :, 0]
    a = under.astype(np.float32)
    a += (over.astype(np.float32) - a) * m
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def face_input(face96: np.ndarray) -> np.ndarray:
    """6×96×96 float32: the crop with its lower half zeroed, then the unmasked reference, /255."""
    masked = face96.copy()
    masked[FACE_SIZE // 2 :] = 0
    return np.concatenate([masked, face96], axis=2).transpose(2, 0, 1).astype(np.float32) / 255.0
