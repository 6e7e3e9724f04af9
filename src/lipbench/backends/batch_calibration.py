"""Batch size alone, for a torch model (the speed suite's ``batch_size: auto``): each
candidate timed once per machine and thread count, the best cached. ``lipbench.tuning``
re-exports it; ``tuning.calibrate`` picks backend, precision and batch together."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ..sysinfo import machine
from .calcache import _load, _update

log = logging.getLogger("lipbench.tuning")

BATCH_CANDIDATES = (8, 16, 32)
CACHE_VERSION = 1  # the batch-only entries of calibrate_batch


def _key(device: str, threads: int) -> str:
    m = machine()
    return f"v{CACHE_VERSION}|{m['cpu']}|{m['cores']}|torch {torch.__version__}|{device}|{threads} threads"


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
    """Measure each batch size of a torch model at ``threads`` threads; cache the best."""
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
    _update(key, entry)
    log.info("calibrated batch size %d for %d thread(s) on %s: %s", best, threads, device, table)
    return entry


def cached_batch(device: str, threads: int) -> int | None:
    entry = _load().get(_key(device, threads))
    return int(entry["batch_size"]) if entry else None
