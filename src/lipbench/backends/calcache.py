"""The calibration cache file (``<cache_root()>/calibration.json``): read, and entries
written under a lock by replicas calibrating at once. ``lipbench.tuning`` owns the keys and
what the entries mean."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from ..atomic import file_lock, write_text_atomic
from ..cachedir import cache_root

log = logging.getLogger("lipbench.tuning")

__all__ = ["_load", "_update", "cache_path"]


def cache_path() -> Path:
    return cache_root() / "calibration.json"


def _load() -> dict[str, Any]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _locked() -> contextlib.AbstractContextManager[None]:
    """Serialise read-modify-write of the cache between replicas calibrating at once."""
    return file_lock(cache_path().with_suffix(".lock"))


def _update(key: str, entry: Any, merge: bool = False) -> None:
    """Write one entry (merged into an existing dict entry with ``merge``)."""
    with _locked():
        cache = _load()
        if merge and isinstance(cache.get(key), dict):
            entry = {**cache[key], **entry}
        cache[key] = entry
        try:
            write_text_atomic(cache_path(), json.dumps(cache, indent=2) + "\n")
        except OSError as exc:  # a read-only home must not stop a run
            log.warning("could not write the calibration cache %s: %s", cache_path(), exc)
