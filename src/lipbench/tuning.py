"""Batch size and torch threads chosen by a short calibration, cached per machine.

The cache (``~/.cache/lipbench/calibration.json`` unless $LIPBENCH_CACHE is set) is keyed by
CPU model, core count, torch version, device and thread count, so a second run — or a
second machine of the same kind — pays nothing. Batch size does not change outputs beyond
float rounding (≤ 1 pixel level, checked by the tests)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from .atomic import write_text_atomic
from .sysinfo import machine

log = logging.getLogger("lipbench.tuning")

BATCH_CANDIDATES = (8, 16, 32)
CACHE_VERSION = 1


def cache_path() -> Path:
    root = os.environ.get("LIPBENCH_CACHE") or Path.home() / ".cache" / "lipbench"
    return Path(root) / "calibration.json"


def _key(device: str, threads: int) -> str:
    m = machine()
    return f"v{CACHE_VERSION}|{m['cpu']}|{m['cores']}|torch {torch.__version__}|{device}|{threads} threads"


def _load() -> dict[str, Any]:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def decode_fps(
    model: torch.nn.Module,
    batch: int,
    device: str,
    seconds: float = 1.5,
    channels_last: bool = True,
) -> float:
    """Frames/s of the per-frame work for a static avatar (audio encoder + decoder)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mel = torch.randn(batch, 1, 80, 16, device=device).contiguous(memory_format=fmt)
    face = torch.rand(1, 6, 96, 96, device=device).contiguous(memory_format=fmt)
    with torch.inference_mode():
        feats = model.encode_face(face)
        expanded = [f.expand(batch, -1, -1, -1) for f in feats]
        model.decode(model.encode_audio(mel), expanded)  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            model.decode(model.encode_audio(mel), expanded)
            n += batch
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0)


def calibrate_batch(
    model: torch.nn.Module, device: str, threads: int, candidates=BATCH_CANDIDATES
) -> dict[str, Any]:
    """Measure each batch size at ``threads`` threads; cache and return the best."""
    key = _key(device, threads)
    cache = _load()
    if key in cache:
        return cache[key]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        table = {str(b): round(decode_fps(model, b, device), 3) for b in candidates}
    finally:
        torch.set_num_threads(before)
    best = int(max(table, key=table.get))
    entry = {
        "batch_size": best,
        "threads": threads,
        "fps_by_batch": table,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    cache = _load()
    cache[key] = entry
    try:
        write_text_atomic(cache_path(), json.dumps(cache, indent=2) + "\n")
    except OSError as exc:  # a read-only home must not stop a run
        log.warning("could not write the calibration cache %s: %s", cache_path(), exc)
    log.info(
        "calibrated batch size %d for %d thread(s) on %s: %s frames/s by batch",
        best,
        threads,
        device,
        table,
    )
    return entry


def cached_batch(device: str, threads: int) -> int | None:
    entry = _load().get(_key(device, threads))
    return int(entry["batch_size"]) if entry else None
