"""The end-to-end prediction from each stage's CPU cost (pure arithmetic, nothing timed)."""

from __future__ import annotations

import math

import pytest

from lipbench.bench.speed_predict import StageCost, describe, network_stage, predict


def test_the_cores_bound_when_every_stage_could_go_faster_alone():
    # 40 + 5 + 5 CPU-ms per frame on 2 cores: 2000 / 50 = 40 frames/s
    p = predict([StageCost("network", 40, 50), StageCost("paste", 5, 200), StageCost("encode", 5, 400)], 2)  # fmt: skip
    assert p.fps == pytest.approx(40.0) and p.bound == "cores" and p.cpu_ms == 50
    assert p.shares == pytest.approx({"network": 80.0, "paste": 10.0, "encode": 10.0})
    assert p.pct(36.0) == pytest.approx(90.0)


def test_a_stage_slower_alone_than_the_cores_allow_caps_it():
    # CPU allows 2000 / 20 = 100 frames/s, but the network alone runs 30
    p = predict([StageCost("network", 10, 30), StageCost("encode", 10, 500)], 2)
    assert p.fps == 30 and p.bound == "network" and p.cpu_bound_fps == pytest.approx(100.0)


def test_a_network_computing_a_share_of_the_frames_costs_that_share():
    s = network_stage(cpu_ms=40.0, fps=50.0, share=0.5)
    assert s.cpu_ms == 20.0 and s.max_fps == 100.0
    with pytest.raises(ValueError):
        network_stage(40.0, 50.0, share=0.0)


def test_more_cores_raise_only_the_cpu_bound():
    stages = [StageCost("network", 40, 25), StageCost("paste", 10)]
    assert predict(stages, 1).fps == pytest.approx(20.0)  # 1000 / 50
    assert predict(stages, 4).fps == 25 and predict(stages, 4).bound == "network"


def test_no_cost_predicts_nothing_and_bad_input_is_refused():
    p = predict([StageCost("null", 0.0)], 2)
    assert math.isinf(p.fps) and p.pct(10.0) is None
    with pytest.raises(ValueError):
        predict([StageCost("x", -1.0)], 2)
    with pytest.raises(ValueError):
        predict([StageCost("x", 1.0)], 0)


def test_describe_names_the_bound_and_the_biggest_share_first():
    text = describe(predict([StageCost("paste", 5, 200), StageCost("network", 45, 40)], 2))
    assert text.startswith("40.00 frames/s (50.0 CPU-ms/frame: network 90 %, paste 10 %")
    assert "bound by the cores" in text
