"""lipbench.metrics: frame differences, PSNR, seam scores, the CPU sampler."""

from __future__ import annotations

import math
import time

import numpy as np

from lipbench.metrics import UsageSampler, max_abs_diff, mean_abs_diff, psnr, seam_scores


def test_differences_do_not_wrap_around_uint8():
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.full((2, 2, 3), 255, np.uint8)
    assert max_abs_diff(a, b) == 255 and mean_abs_diff(b, a) == 255.0
    assert psnr(a, a) == math.inf and round(psnr(a, b), 6) == 0.0
    c = a.copy()
    c[0, 0, 0] = 1  # one level on one of 12 values: MSE 1/12
    assert abs(psnr(a, c) - 10 * math.log10(255**2 * 12)) < 1e-9


def test_a_seam_is_scored_against_the_typical_step():
    flat = np.zeros((4, 4, 3), np.uint8)
    edges = [
        {"first": flat, "last": flat + 2, "steps": [1.0, 1.0]},
        {"first": flat + 10, "last": flat + 10, "steps": [1.0, 3.0]},
    ]
    (seam,) = seam_scores(edges)
    assert seam["boundary"] == 0 and seam["jump"] == 8.0 and seam["typical_step"] == 1.0
    assert seam["ratio"] == 8.0
    assert seam_scores([edges[0]]) == []  # one chunk: no seam


def test_the_sampler_records_cpu_and_the_given_processes():
    import os

    with UsageSampler(interval=0.05, pids=[os.getpid()]) as u:
        time.sleep(0.3)
    s = u.summary()
    assert s["n"] == len(s["samples"]) >= 2
    assert all(f"rss_mb_{os.getpid()}" in row for row in s["samples"])
    assert 0 <= s["cpu_percent_mean"] <= s["cpu_percent_max"] <= 100
