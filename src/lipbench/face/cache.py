"""The on-disk face-detection cache: every face the detector found (box, five landmarks,
score) in each avatar frame it has looked at, one JSON file per avatar and detector.

Only raw detections are kept, so one file serves any pads, smoothing, face choice, loop and
audio length: a longer audio detects only the frames not yet in the file and adds them.
The key covers the avatar's pixels (its ``content_hash`` changes when loading resized or
cropped the frames) and the detector, so a file is either right for this avatar or never
looked at; a file that does not fully check out is ignored (and rewritten).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from lipbench.atomic import write_text_atomic
from lipbench.face.avatar import Avatar

log = logging.getLogger(__name__)

# Bump when the detection rules or the JSON layout change: old cache files then stop matching.
CACHE_FORMAT_VERSION = 2
ROW = 15  # x, y, w, h, 5 landmarks (x, y), score — NaN landmarks for Haar


def detection_cache_key(avatar: Avatar, detector: str) -> str:
    """sha256 over everything the raw detections depend on (hex)."""
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "content": avatar.content_hash,
        "detector": str(detector).strip().lower(),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.json"


def _rows(value: object) -> np.ndarray | None:
    a = np.asarray(value, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, ROW))
    if a.ndim != 2 or a.shape[1] != ROW:
        return None
    ok = np.all(np.isfinite(a[:, :4])) and np.all(a[:, 2:4] > 0) and np.all(np.isfinite(a[:, 14]))
    return a if ok else None


def read_cache(path: Path, key: str, avatar: Avatar) -> dict[int, np.ndarray]:
    """Detections per avatar frame from a cache file; {} if missing or not fully right."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != CACHE_FORMAT_VERSION or doc.get("key") != key:
            return {}
        if list(doc.get("size", [])) != list(avatar.size):
            return {}
        out: dict[int, np.ndarray] = {}
        for k, rows in doc["frames"].items():
            a = _rows(rows)
            if a is None or not 0 <= int(k) < len(avatar):
                return {}
            out[int(k)] = a
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}
    return out


def write_cache(
    path: Path, key: str, avatar: Avatar, detector: str, dets: dict[int, np.ndarray]
) -> None:
    def enc(a: np.ndarray) -> list[list[float | None]]:
        # JSON has no NaN: Haar's missing landmarks are written as null
        return [[None if np.isnan(v) else round(float(v), 2) for v in r] for r in a]

    doc = {
        "version": CACHE_FORMAT_VERSION,
        "key": key,
        "source": avatar.source,
        "content_hash": avatar.content_hash,
        "detector": detector,
        "size": list(avatar.size),
        "original_size": list(avatar.original_size or avatar.size),
        "row": "x y w h  right-eye left-eye nose right-mouth left-mouth (x y each)  score",
        "frames": {str(k): enc(dets[k]) for k in sorted(dets)},
    }
    try:
        write_text_atomic(path, json.dumps(doc, separators=(",", ":")) + "\n")
    except OSError as e:  # a cache that cannot be written only costs time
        log.warning("could not write face-detection cache %s: %s", path, e)
