"""OpenCV's Haar cascade: every frontal face in one frame, and the rule that picks the one."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from lipbench.errors import FaceError, InputError

# Haar settings (FACTS.md: one face at x=177, y=66, w=95, h=95 on the astronaut).
_HAAR_FILE = "haarcascade_frontalface_default.xml"
_HAAR_SCALE_FACTOR = 1.1
_HAAR_MIN_NEIGHBORS = 5
# minSize is 60 px on a 512 px image, i.e. ~11.7 % of the short side, never below 30 px.
_HAAR_MIN_FRACTION = 60 / 512
_HAAR_MIN_PX = 30
# Big frames are searched at reduced size (boxes scaled back): same faces, far less time.
_DETECT_MAX_SIDE = 720
# Several faces: the largest wins only if its area is at least this multiple of the next one.
_DOMINANCE = 2.0

_tls = threading.local()


def _cascade() -> cv2.CascadeClassifier:
    # One classifier per thread: sharing one across threads is not documented as safe.
    c = getattr(_tls, "cascade", None)
    if c is None:
        xml = Path(cv2.data.haarcascades) / _HAAR_FILE
        c = cv2.CascadeClassifier(str(xml))
        if c.empty():
            raise InputError(
                f"OpenCV's Haar cascade {xml} could not be loaded",
                "reinstall opencv-python-headless 4.x (OpenCV 5 has no CascadeClassifier)",
            )
        _tls.cascade = c
    return c


def haar_faces(frame: np.ndarray) -> np.ndarray:
    """All Haar detections on one BGR frame as a K x 4 int array of (x, y, w, h), full-res."""
    h, w = frame.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    small = frame
    if scale < 1.0:
        small = cv2.resize(
            frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
        )
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    gray = cv2.equalizeHist(gray)
    side = max(_HAAR_MIN_PX, round(min(gray.shape[:2]) * _HAAR_MIN_FRACTION))
    found = _cascade().detectMultiScale(
        gray,
        scaleFactor=_HAAR_SCALE_FACTOR,
        minNeighbors=_HAAR_MIN_NEIGHBORS,
        minSize=(side, side),
    )
    rects = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    return np.rint(rects / scale).astype(np.int64)


def pick_face(rects: np.ndarray, where: str) -> np.ndarray | None:
    """The one face in ``rects`` (x, y, w, h), None if empty; FaceError if ambiguous."""
    if len(rects) == 0:
        return None
    if len(rects) == 1:
        return rects[0]
    areas = rects[:, 2].astype(np.int64) * rects[:, 3]
    order = np.argsort(-areas, kind="stable")
    first, second = areas[order[0]], areas[order[1]]
    if first >= _DOMINANCE * second:
        return rects[order[0]]
    raise FaceError(
        f"several faces of similar size ({len(rects)}) found in {where}",
        "crop the avatar to one face",
    )
