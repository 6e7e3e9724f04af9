"""Where lipbench keeps per-machine caches (calibration, compiled graphs, seeded
generators): $LIPBENCH_CACHE, else ~/.cache/lipbench. The seeded generators (~145 MB each)
can be put elsewhere with $LIPBENCH_GENERATOR_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LIPBENCH_CACHE") or Path.home() / ".cache" / "lipbench")
