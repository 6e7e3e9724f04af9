"""Cut the face out of a frame at Wav2Lip's input size, and paste a generated face back."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# Wav2Lip's face crop: FACE_SIZE x FACE_SIZE pixels. The one definition in lipbench.
FACE_SIZE = 96


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
    frame: np.ndarray, box: Any, face96: np.ndarray, *, inplace: bool = False
) -> np.ndarray:
    """Resize a generated face (FACE_SIZE² BGR uint8) to the box and write it at the box.

    Returns a new frame by default (avatar frames are read-only and shared between output
    frames); with ``inplace=True`` writes into ``frame`` and returns it. Pixels outside the
    box are untouched.
    """
    x1, y1, x2, y2 = _box_in(frame, box)
    if face96.dtype != np.uint8 or face96.ndim != frame.ndim:
        raise ValueError(
            f"face must be uint8 with {frame.ndim} dims, got {face96.dtype} {face96.shape}"
        )
    patch = cv2.resize(face96, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    out = frame if inplace else frame.copy()
    out[y1:y2, x1:x2] = patch.reshape(out[y1:y2, x1:x2].shape)
    return out


def face_input(face96: np.ndarray) -> np.ndarray:
    """6×96×96 float32: the crop with its lower half zeroed, then the unmasked reference, /255."""
    masked = face96.copy()
    masked[FACE_SIZE // 2 :] = 0
    return np.concatenate([masked, face96], axis=2).transpose(2, 0, 1).astype(np.float32) / 255.0
