"""The on-disk face-detection cache: one JSON file per key under the cache folder.

The key covers everything the boxes depend on, the avatar's pixels included (its
``content_hash`` changes when loading resized or cropped the frames), so a file is either
right for this avatar or never looked at. A file that does not fully check out is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lipbench.atomic import write_text_atomic
from lipbench.face.avatar import Avatar
from lipbench.face.boxes import FaceBoxes, check_pads, check_smooth

log = logging.getLogger(__name__)

# Bump when the detection rules or the JSON layout change: old cache files then stop matching.
CACHE_FORMAT_VERSION = 1


def detection_cache_key(avatar: Avatar, detector: str, pads: Any, smooth: int) -> str:
    """sha256 over everything the boxes depend on (hex)."""
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "content": avatar.content_hash,
        "detector": str(detector).strip().lower(),
        "pads": list(check_pads(pads)),
        "smooth": check_smooth(smooth),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.json"


def read_cache(path: Path, key: str, avatar: Avatar) -> np.ndarray | None:
    """Boxes from a cache file, or None if it is missing or does not fully check out."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != CACHE_FORMAT_VERSION or doc.get("key") != key:
            return None
        boxes = np.asarray(doc["boxes"], dtype=np.int64)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    w, h = avatar.size
    ok = (
        boxes.ndim == 2
        and boxes.shape == (len(avatar), 4)
        and bool(np.all(boxes[:, 0] >= 0))
        and bool(np.all(boxes[:, 1] >= 0))
        and bool(np.all(boxes[:, 2] <= w))
        and bool(np.all(boxes[:, 3] <= h))
        and bool(np.all(boxes[:, 2] > boxes[:, 0]))
        and bool(np.all(boxes[:, 3] > boxes[:, 1]))
    )
    return boxes if ok else None


def write_cache(path: Path, key: str, avatar: Avatar, fb: FaceBoxes) -> None:
    doc = {
        "version": CACHE_FORMAT_VERSION,
        "key": key,
        "source": avatar.source,
        "content_hash": avatar.content_hash,
        "detector": fb.detector,
        "pads": list(fb.pads),
        "smooth": fb.smooth,
        "size": list(avatar.size),
        "original_size": list(avatar.original_size or avatar.size),
        "boxes": fb.boxes.tolist(),
    }
    try:
        write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
    except OSError as e:  # a cache that cannot be written only costs time
        log.warning("could not write face-detection cache %s: %s", path, e)
