"""The run record (run.json): what a run did, how long each stage took, with what."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from .atomic import write_text_atomic

RECORD_VERSION = 1


class StageTimer:
    """Wall time of named stages, in the order they ran."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - t, 4)

    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 4)


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in (
        "lipbench",
        "torch",
        "numpy",
        "opencv-python-headless",
        "imageio-ffmpeg",
        "piper-tts",
        "snakemake",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        import imageio_ffmpeg

        out["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - version reporting must never break a run
        pass
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    record = {"record_version": RECORD_VERSION, **record}
    return write_text_atomic(
        path, json.dumps(record, indent=2, ensure_ascii=False, default=_default) + "\n"
    )


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
