"""`lipbench bench --suite speed` runs end to end and reports what it measured, each figure
marked with what other processes took from the machine meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import yaml


def test_speed_suite_smoke(tmp_path, make_config):
    out = tmp_path / "bench"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(make_config(tmp_path, render={"batch_size": 2})))
    env = {**os.environ, "LIPBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "lipbench.cli", "--config", str(cfg), "bench", "--suite", "speed", "--seconds", "1",
         "--variant-seconds", "0.2", "--no-memory", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "floor" in proc.stdout and "speed-up of the default path over the plain path" in proc.stdout
    )
    assert "SEEDED RANDOM" in proc.stdout and "batch size: 2" in proc.stdout
    df = pd.read_csv(out / "speed.csv")
    net = df[df.kind == "network"]
    assert len(net) == 5 and (net.fps > 0).all()
    # every default (exact) option stays within one pixel level of plain fp32
    assert (net[net.exact].max_abs_px <= 1).all()
    # bf16 is reported with its error, not hidden
    assert not net[~net.exact].empty and net[~net.exact].psnr_db.notna().all()
    e2e = df[df.kind == "end_to_end"]
    assert list(e2e.option) == ["plain path (before #8)", "default path"] and (e2e.fps > 0).all()
    # each timed figure carries its contamination check
    timed = df[df.kind.isin(["network", "end_to_end"])]
    assert timed.others_pct.between(0, 100).all() and timed.clean.notna().all()
    busy = timed[~timed.clean.astype(bool)]
    assert busy.empty or "BUSY: other processes took more than 5 %" in proc.stdout
