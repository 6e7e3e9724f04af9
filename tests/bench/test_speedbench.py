"""`lipbench bench --suite speed` runs end to end in one process and reports what it measured:
ceilings per thread count, every backend × precision available here with its % of the conv
ceiling at the same thread count and its fidelity, paste-back and encode alone, end to end
per path as a % of its own network-only rate — each timed figure marked with what other
processes took from the machine meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

from lipbench.backends import has_bf16_hardware
from lipbench.backends.measure import choices
from lipbench.errors import InputError

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def suite(tmp_path_factory, make_config):
    tmp = tmp_path_factory.mktemp("speed")
    out = tmp / "bench"
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(make_config(tmp, render={"batch_size": 2})))
    env = {**os.environ, "LIPBENCH_CACHE": str(tmp / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "lipbench.cli", "--config", str(cfg), "bench", "--suite", "speed", "--seconds", "1",
         "--variant-seconds", "0.2", "--no-memory", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, pd.read_csv(out / "speed.csv"), json.loads((out / "speed.json").read_text())


def test_header_names_the_device_from_the_config(suite):
    stdout, df, doc = suite
    assert "device: cpu (config device: auto)" in stdout and doc["device"] == "cpu"
    assert "SEEDED RANDOM" in stdout and "batch size: 2" in stdout and "load average" in stdout


def test_every_backend_and_precision_at_each_thread_count(suite):
    stdout, df, _ = suite
    ceilings = df[df.kind == "ceiling"].set_index("threads")
    threads = sorted(ceilings.index)
    assert 1 in threads and (ceilings.conv_gflops > 0).all()
    measured, skipped = choices("cpu")
    nets = df[df.kind == "backend"]
    got = sorted(zip(nets.backend, nets.precision, nets.threads, strict=True))
    assert got == sorted((b, p, t) for b, p in measured for t in threads)
    assert (nets.fps > 0).all() and nets.psnr_db.notna().any()
    # % of the conv ceiling measured at the same thread count (static avatar: its ceiling),
    # in the precision the network runs as: a bf16 ceiling exists where bf16 is native
    assert ("conv_bf16_gflops" in ceilings) == has_bf16_hardware()
    for _, r in nets.iterrows():
        bf = "_bf16" if r.effective_precision == "bf16" and has_bf16_hardware() else ""
        expect = 100 * r.fps / ceilings.loc[r.threads, f"conv{bf}_static"]
        assert abs(r.pct_conv_ceiling - expect) < 0.1 + 1e-3 * expect
    # every fp32 backend is exact vs plain fp32 here; what is left out says why
    fp32 = nets[nets.precision == "fp32"]
    assert fp32.exact.all() and (fp32.max_abs_px <= 1).all()
    for b, p, why in skipped:
        assert f"not measured: {b} {p} — {why}" in stdout


def test_torch_options_stay_exact(suite):
    _, df, _ = suite
    opts = df[df.kind == "network"]
    assert len(opts) == 4 and (opts.fps > 0).all() and (opts.max_abs_px <= 1).all()


def test_paste_and_encode_are_measured_alone(suite):
    stdout, df, doc = suite
    stages = df[df.kind == "stage"]
    assert stages.option.iloc[0] == "paste-back" and (stages.fps > 0).all()
    assert any(
        o.startswith("H.264 encode, configured: x264 veryfast, crf 18, tune zerolatency")
        for o in stages.option
    )
    assert any("tune none" in o for o in stages.option)  # the effect of the streaming change
    assert {"network", "paste", "encode", "encode_cpu_ms", "predicted"} <= set(doc["stages_fps"])
    assert (stages.cpu_ms_per_frame > 0).all()
    assert "slowest stage alone:" in stdout


def test_end_to_end_per_path_against_its_network_only_rate(suite):
    stdout, df, doc = suite
    e2e = df[df.kind == "end_to_end"].set_index("option")
    assert e2e.index[0] == "plain path (before #8)" and (e2e.fps > 0).all()
    nets = df[(df.kind == "backend") & (df.threads == doc["fastest_exact"]["threads"])]
    for _, r in nets.iterrows():
        name = f"{r.backend} {r.precision}"
        e = e2e.loc[name]
        assert abs(e.pct_network - 100 * e.fps / r.fps) < 0.1
        # judged on what the network computed: repeated mel windows are rendered once
        assert 0 < e.network_frames <= e.frames
        assert abs(e.pct_network_work - 100 * e.network_frames / e.wall_s / r.fps) < 0.2
        if not r.exact:  # every inexact pair runs end to end too, judged against 40 dB
            bar = "passes" if r.passes_psnr else "FAILS"
            assert f"inexact path {name}: " in stdout and f"({bar} the 40 dB bar)" in stdout
    fastest = doc["fastest_exact"]
    assert fastest["exact"] and fastest["fps"] == nets[nets.exact].fps.max()
    assert (
        "fastest exact path end to end:" in stdout
        and "counting only the frames the network computed" in stdout
    )


def test_each_timed_figure_carries_its_contamination(suite):
    stdout, df, _ = suite
    timed = df[df.kind.isin(["ceiling", "network", "backend", "stage", "end_to_end"])]
    assert timed.others_pct.between(0, 100).all() and timed.clean.notna().all()
    busy = timed[~timed.clean.astype(bool)]
    assert busy.empty or "BUSY: other processes took more than 5 %" in stdout


def test_device_comes_from_the_config(tmp_path, make_config, monkeypatch):
    """`device: cuda` on a machine without one stops before anything is measured."""
    from lipbench.bench.speed_suite import SpeedOptions, run_speed_suite

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said: list[str] = []
    with pytest.raises(InputError, match="device 'cuda' was asked for"):
        run_speed_suite(
            make_config(tmp_path, device="cuda"), SpeedOptions(tmp_path / "o"), said.append
        )
    assert said == []


def test_every_end_to_end_row_has_its_prediction_and_a_null_row_exists(suite):
    stdout, df, _ = suite
    e2e = df[df.kind == "end_to_end"].set_index("option")
    assert "null network (pipeline ceiling)" in e2e.index and e2e.index[-1].startswith("null")
    assert (e2e.predicted_fps > 0).all() and (e2e.cpu_ms_prep > 0).all()
    expect = 100 * e2e.fps / e2e.predicted_fps  # both rounded in the csv: a relative margin
    assert ((e2e.pct_predicted - expect).abs() < 0.1 + 0.002 * expect).all()
    window = e2e.frames / (e2e.render_s + e2e.encode_wait_s)  # render + encode, no fixed costs
    assert ((e2e.frames_window_fps - window).abs() < 0.01 + 0.002 * window).all()
    assert (e2e.frames_window_fps >= e2e.fps * 0.999).all()
    null = e2e.loc["null network (pipeline ceiling)"]
    assert pd.isna(null.cpu_ms_network) and null.predicted_bound in {
        "cores",
        "prep",
        "paste",
        "encode",
    }
    assert e2e.drop(index="null network (pipeline ceiling)").cpu_ms_network.notna().all()
    assert "pipeline ceiling (null network):" in stdout and "input preparation" in stdout


def test_openvino_options_are_measured_and_stay_exact(suite):
    _, df, _ = suite
    from lipbench.backends import available

    ov = df[df.kind == "openvino_option"]
    if "openvino" not in available():
        assert ov.empty
        return
    names = set(ov.option)
    assert any("static shapes" in n for n in names) and any("2 streams" in n for n in names)
    assert any(n.startswith("latency, 1 stream, batch 8") for n in names)
    assert (ov.fps > 0).all() and (ov.cpu_ms_per_frame > 0).all()
    assert (ov.max_abs_px_vs_default <= 1).all()
