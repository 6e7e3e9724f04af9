"""`lipbench bench --suite speed` runs end to end and reports what it measured."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd


def test_speed_suite_smoke(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "LIPBENCH_SPEED_SECONDS": "0.3", "LIPBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "lipbench.cli", "bench", "--suite", "speed", "--seconds", "2", "--no-memory", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "floor" in proc.stdout and "speed-up of the default path over the plain path" in proc.stdout
    )
    assert "SEEDED RANDOM" in proc.stdout
    df = pd.read_csv(out / "speed.csv")
    net = df[df.kind == "network"]
    assert len(net) == 5 and (net.fps > 0).all()
    # every default (exact) option stays within one pixel level of plain fp32
    assert (net[net.exact].max_abs_px <= 1).all()
    # bf16 is reported with its error, not hidden
    assert not net[~net.exact].empty and net[~net.exact].psnr_db.notna().all()
    e2e = df[df.kind == "end_to_end"]
    assert list(e2e.option) == ["plain path (before #8)", "default path"] and (e2e.fps > 0).all()
