"""Chunk planning: the seed's decision tree, frame-aligned cuts, silence snapping; the
measured policy's objective (throughput or latency) on hand-set cost models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lipbench.errors import InputError
from lipbench.keyframes import Keyframes
from lipbench.measured_cost import MeasuredCost, even_split
from lipbench.plan import (
    Plan,
    cut_points,
    estimate_optimal_chunks,
    frame_count,
    make_plan,
    plan_audio,
    planned_chunks,
    write_chunk_wavs,
)
from lipbench.request import Settings

EVERY_SECOND = Keyframes(25, 1.0)


@pytest.mark.parametrize(
    "duration,replicas,expected",
    [
        (0.1, 2, 1),
        (5, 2, 1),
        (9.99, 4, 1),
        (10, 2, 2),
        (20.5, 2, 2),
        (29, 4, 2),
        (31, 4, 3),
        (45, 4, 3),
        (61, 4, 4),
        (300, 4, 4),
        (300, 2, 2),
        (45, 1, 1),
    ],
)
def test_seed_decision_tree(duration, replicas, expected):
    assert estimate_optimal_chunks(duration, replicas) == expected


def test_20_5_seconds_gives_two_frame_aligned_chunks():
    fps = 25
    x = np.random.default_rng(1).standard_normal(int(20.5 * 16000)).astype(np.float32) * 0.1
    n = estimate_optimal_chunks(20.5, 2)
    plan = make_plan(x, fps, n, ["gan", "nogan"], snap_silence=False)
    assert plan.n_frames == round(20.5 * fps) == 512
    assert [c.model for c in plan.chunks] == ["gan", "nogan"]
    a, b = plan.chunks
    assert (a.frame_start, a.frame_end, b.frame_start, b.frame_end) == (0, 256, 256, 512)
    # sample ranges sit on frame boundaries (640 samples per frame at 25 fps) and cover the file
    assert a.sample_end == b.sample_start == 256 * 640
    assert b.sample_end == len(x)


def test_cuts_snap_to_silence_and_stay_valid():
    fps = 25
    x = np.random.default_rng(2).standard_normal(16000 * 20).astype(np.float32) * 0.2
    x[int(9.3 * 16000) : int(9.6 * 16000)] = 0  # a pause 0.4–0.7 s before the even cut at 10 s
    cuts = cut_points(x, frame_count(len(x), fps), 2, fps, snap_silence=True, snap_window_s=0.5)
    assert 9.3 * fps <= cuts[1] <= 9.6 * fps
    no_snap = cut_points(x, frame_count(len(x), fps), 2, fps, snap_silence=False)
    assert no_snap[1] == 250


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 4, 7])
def test_chunks_partition_all_frames(n_chunks):
    x = np.random.default_rng(3).standard_normal(16000 * 3).astype(np.float32)
    plan = make_plan(x, 25, n_chunks, ["gan", "nogan"])
    frames = [f for c in plan.chunks for f in range(c.frame_start, c.frame_end)]
    assert frames == list(range(plan.n_frames))
    assert all(c.n_frames >= 1 for c in plan.chunks)
    assert plan.chunks[-1].sample_end == len(x)


def test_tiny_file_is_one_chunk():
    x = np.zeros(1600, dtype=np.float32)  # 0.1 s
    assert estimate_optimal_chunks(0.1, 4) == 1
    plan = make_plan(x, 25, 4, ["gan"])  # more chunks than frames → clamped
    assert plan.n_frames == 2 and plan.n_chunks == 2


def test_plan_json_round_trip_and_split(tmp_path):
    x = np.random.default_rng(4).standard_normal(16000 * 4).astype(np.float32) * 0.1
    plan = make_plan(x, 25, 2, ["gan", "nogan"])
    plan.save(tmp_path / "plan.json")
    again = Plan.load(tmp_path / "plan.json")
    assert again == plan
    paths = write_chunk_wavs(x, plan, tmp_path / "chunks")
    import soundfile as sf

    total = 0
    for c, p in zip(plan.chunks, paths, strict=True):
        meta = json.loads(p.with_suffix(".json").read_text())
        assert (meta["frame_start"], meta["frame_end"]) == (c.frame_start, c.frame_end)
        total += sf.info(str(p)).frames
    assert total == len(x)


# --- the planner's objective: throughput or latency (hand-set cost models) -----------------
# A slow CPU: one 2-thread replica 10 frames/s, two 1-thread replicas 6 each (12 together).
SLOW = MeasuredCost("cpu", 2, thread_fps={1: 6.0, 2: 10.0}, concurrent_fps={2: 6.0},
                    overhead_s={"sequential": 1.0, "parallel": 1.0},
                    startup_s={"sequential": 0.5, "parallel": 0.5})  # fmt: skip


def test_latency_and_throughput_pick_differently_on_a_slow_cpu():
    """10 s (250 frames) at 25 fps, segments of 1 s. Parallel finishes sooner: 125 / 6 + 1 =
    21.8 s vs 250 / 10 + 1 = 26 s. Streamed, sequential's segments are ready at 0.5 + 2.5 k s
    (k = 1…10): first at 3.0, the last at 25.5, playback ends 26.5 → waits 16.5 s in all.
    Parallel's chunk 1 is ready at 0.5 + 25 k / 6 (first 4.67 s, last 21.33 s) and its chunk 2
    only plays after it: ends 22.33 + 5 = 27.33 → waits 17.33 s."""
    seq = SLOW.predict_playback(250, 1, 2, EVERY_SECOND)
    par = SLOW.predict_playback(250, 2, 2, EVERY_SECOND)
    assert (seq.first_playable_s, seq.stall_s, seq.ends_s) == pytest.approx((3.0, 13.5, 26.5))
    assert (par.first_playable_s, par.latency_s) == pytest.approx((0.5 + 25 / 6, 17.0 + 1 / 3))
    assert SLOW.best_chunks(250, 2, 2) == 2  # throughput: 21.8 s < 26 s
    assert SLOW.best_chunks(250, 2, 2, "latency", EVERY_SECOND) == 1  # latency: 16.5 s < 17.3 s


def test_latency_may_cut_more_chunks_than_replicas():
    """200 frames (8 s); sequential 8 frames/s, each of 2 replicas 5; no fixed costs.
    Sequential: last segment ready at 25 s → ends 26 → waits 18 s. Two chunks of 100: chunk 1
    ready at 5, 10, 15, 20 s → ends 21, chunk 2 already there → 25 → 17 s. Four chunks of 50
    (chunks 1 and 3 on replica 0, 2 and 4 on replica 1): ready 5, 10 | 5, 10 | 15, 20 | 15, 20
    → 6, 11, 12, 13, 16, 21, 22, 23 → waits 15 s."""
    cost = MeasuredCost("cpu", 2, {2: 8.0}, {2: 5.0}, {"sequential": 0.0, "parallel": 0.0},
                        startup_s={"sequential": 0.0, "parallel": 0.0})  # fmt: skip
    assert [cost.predict_playback(200, n, 2, EVERY_SECOND).latency_s for n in (1, 2, 4)] == pytest.approx([18.0, 17.0, 15.0])  # fmt: skip
    assert cost.best_chunks(200, 2, 4, "latency", EVERY_SECOND) == 4
    assert cost.best_chunks(200, 2, 4, "latency", EVERY_SECOND) != cost.best_chunks(200, 2, 4)
    assert cost.best_chunks(200, 1, 4, "latency", EVERY_SECOND) == 1  # one replica: nothing to gain


def test_a_fast_renderer_streams_best_from_one_replica():
    """Rendering faster than playback (50 vs 25 frames/s): nothing stalls, so the first
    segment decides — one replica at 50 frames/s has it at 0.5 + 25 / 50 = 1.0 s, two
    replicas at 30 each at 0.5 + 25 / 30 = 1.33 s — though two finish sooner (5.2 vs 6 s)."""
    cost = MeasuredCost("gpu", 2, {2: 50.0}, {2: 30.0}, {"sequential": 1.0, "parallel": 1.0},
                        startup_s={"sequential": 0.5, "parallel": 0.5})  # fmt: skip
    seq, par = (cost.predict_playback(250, n, 2, EVERY_SECOND) for n in (1, 2))
    assert (seq.first_playable_s, seq.stall_s) == pytest.approx((1.0, 0.0))
    assert (par.first_playable_s, par.stall_s) == pytest.approx((0.5 + 25 / 30, 0.0))
    assert (
        cost.best_chunks(250, 2, 4) == 2
        and cost.best_chunks(250, 2, 4, "latency", EVERY_SECOND) == 1
    )


def test_an_old_cost_model_without_startup_uses_its_fixed_costs():
    old = MeasuredCost.from_dict({k: v for k, v in SLOW.to_dict().items() if k != "startup_s"})
    assert old.startup_s == {}
    # the whole fixed cost (1.0 s) stands in for the start-up: 1.0 + 25 / 10
    assert old.predict_playback(250, 1, 2, EVERY_SECOND).first_playable_s == pytest.approx(3.5)
    assert MeasuredCost.from_dict(SLOW.to_dict()) == SLOW
    with pytest.raises(InputError, match="unknown plan objective"):
        SLOW.best_chunks(250, 2, 2, "speed")


def test_even_split_matches_the_planner_without_snapping():
    x = np.zeros(16000 * 10, dtype=np.float32)
    for n in (1, 2, 3, 4):
        plan = make_plan(x, 25, n, ["gan", "nogan"], snap_silence=False)
        assert even_split(250, n) == [c.n_frames for c in plan.chunks]


def _latency_cfg(make_config, tmp_path, **plan):
    cfg = make_config(tmp_path, results_dir=str(tmp_path / "res"),
                      plan={"policy": "measured", "objective": "latency", **plan})  # fmt: skip
    path = tmp_path / "res" / "bench" / "cost_model.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(SLOW.to_dict()))
    return cfg


def test_one_decision_for_every_caller(make_config, tmp_path):
    """planned_chunks decides; plan_audio (CLI `plan`, the pipeline, the workflow) and
    the bench's grid ask it, so they all follow plan.objective."""
    from lipbench.bench.grid import planner_for

    cfg = _latency_cfg(make_config, tmp_path, max_chunks=2)
    assert cfg["plan"]["objective"] == "latency"
    assert planned_chunks(10.0, 2, Settings.from_config(cfg)) == (1, "measured latency")
    assert planned_chunks(10.0, 2, Settings.from_config(cfg), stream=False) == (
        2,
        "measured",
    )  # latency = total time
    assert planned_chunks(10.0, 2, Settings.from_config(cfg), chunks=3) == (3, "fixed")
    x = np.zeros(16000 * 10, dtype=np.float32)
    assert plan_audio(x, Settings.from_config(cfg), ["gan", "nogan"]).n_chunks == 1
    assert plan_audio(x, Settings.from_config(cfg), ["gan", "nogan"], stream=False).n_chunks == 2
    assert planner_for(10.0, 2, cfg) == 1 and planner_for(10.0, 2, cfg, stream=False) == 2
    default = make_config(tmp_path / "d", results_dir=str(tmp_path / "res"), plan={"policy": "measured"})  # fmt: skip
    assert default["plan"]["objective"] == "throughput"
    assert planned_chunks(10.0, 2, Settings.from_config(default)) == (2, "measured")


def test_latency_needs_the_measured_cost_model(make_config, tmp_path):
    cfg = make_config(tmp_path, plan={"policy": "seed", "objective": "latency"})
    with pytest.raises(InputError, match="objective is 'latency' but plan.policy is 'seed'") as err:
        planned_chunks(20.0, 2, Settings.from_config(cfg))
    assert "plan.policy: measured" in err.value.fix
    assert planned_chunks(20.0, 2, Settings.from_config(cfg), stream=False) == (
        2,
        "seed",
    )  # not streamed: throughput
    with pytest.raises(InputError, match="plan/objective"):
        make_config(tmp_path, plan={"objective": "fast"})
