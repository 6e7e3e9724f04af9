"""Machine and library facts recorded with every run and every benchmark figure."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


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
