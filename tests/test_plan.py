"""Chunk planning: the seed's decision tree, frame-aligned cuts, silence snapping."""

from __future__ import annotations

import numpy as np
import pytest

from lipbench.plan import (
    Plan,
    cut_points,
    estimate_optimal_chunks,
    frame_count,
    make_plan,
    write_chunk_wavs,
)


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
    import json

    import soundfile as sf

    total = 0
    for c, p in zip(plan.chunks, paths, strict=True):
        meta = json.loads(p.with_suffix(".json").read_text())
        assert (meta["frame_start"], meta["frame_end"]) == (c.frame_start, c.frame_end)
        total += sf.info(str(p)).frames
    assert total == len(x)
