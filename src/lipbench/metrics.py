"""Measurements of outputs and runs: seam jumps, frame equality/PSNR, resource sampling."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import psutil


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.max(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def seam_scores(edges: list[dict]) -> list[dict]:
    """For each boundary k|k+1: mean |last frame of k − first frame of k+1| divided by the
    median consecutive-frame difference inside the chunks. ≈1 means the seam looks like any
    other frame step; much larger means a visible jump (e.g. GAN next to NOGAN).

    ``edges``: per chunk, in order, {"first": frame, "last": frame, "steps": [diffs...]}."""
    steps = [s for e in edges for s in e["steps"]]
    typical = float(np.median(steps)) if steps else float("nan")
    out = []
    for k in range(len(edges) - 1):
        jump = mean_abs_diff(edges[k]["last"], edges[k + 1]["first"])
        ratio = jump / typical if typical and typical > 0 else (0.0 if jump == 0 else float("inf"))
        out.append(
            {
                "boundary": k,
                "jump": round(jump, 5),
                "typical_step": round(typical, 5),
                "ratio": round(ratio, 4),
            }
        )
    return out


@dataclass
class UsageSampler:
    """Samples system CPU % (and per-process RSS of given pids) on a background thread."""

    interval: float = 0.25
    pids: list[int] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> UsageSampler:
        psutil.cpu_percent(None)
        t0 = time.time()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                row = {"t": round(time.time() - t0, 3), "cpu_percent": psutil.cpu_percent(None)}
                for pid in self.pids:
                    try:
                        row[f"rss_mb_{pid}"] = round(
                            psutil.Process(pid).memory_info().rss / 2**20, 1
                        )
                    except psutil.Error:
                        pass
                self.samples.append(row)

        self._thread = threading.Thread(target=loop, daemon=True, name="usage-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict:
        cpu = [s["cpu_percent"] for s in self.samples]
        return {
            "interval_s": self.interval,
            "n": len(cpu),
            "cpu_percent_mean": round(float(np.mean(cpu)), 1) if cpu else None,
            "cpu_percent_max": round(float(np.max(cpu)), 1) if cpu else None,
            "samples": self.samples,
        }
