"""Where lipbench keeps per-machine caches (calibration, compiled graphs):
$LIPBENCH_CACHE, else ~/.cache/lipbench."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LIPBENCH_CACHE") or Path.home() / ".cache" / "lipbench")
