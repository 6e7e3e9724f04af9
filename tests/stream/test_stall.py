"""Stall time and first playable frame from segment ready times, against cases worked by hand;
and the schedule that predicts those ready times for a plan (the planner's latency model)."""

from __future__ import annotations

import math

import pytest

from lipbench.keyframes import Keyframes
from lipbench.stream.stall import playback, segment_schedule, stall_seconds

EVERY_SECOND = Keyframes(25, 1.0)


def test_all_ready_before_playback_needs_them_never_stalls():
    # starts at 0.5; segment 2 is needed at 1.5, segment 3 at 2.5: both long ready
    p = playback([0.5, 0.6, 0.7], [1.0, 1.0, 1.0])
    assert (p.first_playable_s, p.stall_s, p.ends_s) == pytest.approx((0.5, 0.0, 3.5))


def test_one_late_segment():
    # 1 → plays to 2; segment 2 (ready 1.5) plays to 3; segment 3 is ready only at 4: waits 1 s
    p = playback([1.0, 1.5, 4.0], [1.0, 1.0, 1.0])
    assert (p.first_playable_s, p.stall_s, p.ends_s) == pytest.approx((1.0, 1.0, 5.0))


def test_several_late_segments_add_up():
    # 0 → 1; wait 1 (ready 2) → 3; wait 2 (ready 5) → 6; segment 4 ready 5.5 ≤ 6 → 7
    p = playback([0.0, 2.0, 5.0, 5.5], [1.0, 1.0, 1.0, 1.0])
    assert (p.stall_s, p.ends_s) == pytest.approx((3.0, 7.0))
    assert stall_seconds([0.0, 2.0, 5.0, 5.5], [1.0] * 4) == pytest.approx(3.0)


def test_a_late_first_segment_only_shifts_the_start():
    early = playback([0.0, 0.5, 1.0], [1.0, 1.0, 1.0])
    late = playback([10.0, 10.5, 11.0], [1.0, 1.0, 1.0])
    assert late.first_playable_s == 10.0 and late.stall_s == 0.0 == early.stall_s
    assert late.ends_s - early.ends_s == pytest.approx(10.0)
    # a first segment later than all the others: the rest are ready when needed
    p = playback([3.0, 1.0, 2.0], [1.0, 1.0, 1.0])
    assert (p.first_playable_s, p.stall_s, p.ends_s) == pytest.approx((3.0, 0.0, 6.0))


def test_unequal_durations():
    # 0 → 0.4; seg 2 ready 0.4 → 0.9; seg 3 ready 1.0: wait 0.1 → 2.0; seg 4 ready 3.0: wait 1.0 → 3.2
    p = playback([0.0, 0.4, 1.0, 3.0], [0.4, 0.5, 1.0, 0.2])
    assert (p.stall_s, p.ends_s) == pytest.approx((1.1, 3.2))
    # what a viewer waits in all = when playback ends − the video's length
    assert p.latency_s == pytest.approx(p.ends_s - 2.1) == pytest.approx(1.1)


@pytest.mark.parametrize(
    "ready,durations,match",
    [
        ([], [], "at least one segment"),
        ([0.0, 1.0], [1.0], "one ready time per segment"),
        ([0.0], [1.0, 1.0], "one ready time per segment"),
        ([math.nan], [1.0], "finite"),
        ([0.0], [math.inf], "finite"),
        ([0.0, 1.0], [1.0, -0.5], "durations must be ≥ 0"),
    ],
)
def test_bad_input_raises(ready, durations, match):
    with pytest.raises(ValueError, match=match):
        playback(ready, durations)


# --- predicted ready times -----------------------------------------------------------------
def test_sequential_streams_from_its_first_segment():
    # 100 frames on one replica at 20 frames/s from 0.5 s: segments of 25 frames ready at
    # 1.75, 3.0, 4.25, 5.5; each plays 1 s, so each later one waits 0.25 s
    ready, durations = segment_schedule([100], 1, 20.0, EVERY_SECOND, start_s=0.5)
    assert ready == pytest.approx([1.75, 3.0, 4.25, 5.5]) and durations == [1.0] * 4
    p = playback(ready, durations)
    assert (p.first_playable_s, p.stall_s, p.latency_s) == pytest.approx((1.75, 0.75, 2.5))


def test_parallel_chunk_two_helps_only_after_chunk_one_has_played():
    # 2 chunks of 50 frames, 2 replicas at 10 frames/s each from 1 s: both chunks' segments
    # are ready at 3.5 and 6.0; chunk 2's are ready before they are needed
    ready, durations = segment_schedule([50, 50], 2, 10.0, EVERY_SECOND, start_s=1.0)
    assert ready == pytest.approx([3.5, 6.0, 3.5, 6.0])
    p = playback(ready, durations)
    assert (p.first_playable_s, p.stall_s, p.ends_s) == pytest.approx((3.5, 1.5, 9.0))


def test_each_replica_renders_its_chunks_in_play_order():
    # chunks 20, 60, 40 frames on 2 replicas at 10 frames/s: replica 0 renders chunk 0 (0–2 s)
    # then chunk 2 (2–6 s); replica 1 renders chunk 1 (0–6 s). Segments are cut on the whole
    # video's seconds: chunk 1 (frames 20–79) at frames 25, 50, 75; chunk 2 (80–119) at 100.
    ready, durations = segment_schedule([20, 60, 40], 2, 10.0, EVERY_SECOND)
    assert ready[0] == pytest.approx(2.0) and durations[0] == pytest.approx(0.8)
    assert ready[1:5] == pytest.approx([0.5, 3.0, 5.5, 6.0])  # chunk 1: 5, 25, 25, 5 frames
    assert durations[1:5] == pytest.approx([0.2, 1.0, 1.0, 0.2])
    assert ready[5:] == pytest.approx([4.0, 6.0])  # chunk 2: 20 frames, then 20
    assert sum(durations) == pytest.approx(120 / 25)


def test_an_early_keyframe_makes_the_first_segment_ready_sooner():
    # 100 frames at 20 frames/s from 0.5 s with a keyframe at 0.5 s (frame 13): the first
    # segment (13 frames) is ready at 1.15 s instead of 1.75 s; it plays 0.52 s, then segment
    # 2 (frames 13–24) is needed at 1.67 but ready at 1.75: 0.08 s of stall
    ready, durations = segment_schedule([100], 1, 20.0, Keyframes(25, 1.0, 0.5), start_s=0.5)
    assert ready == pytest.approx([1.15, 1.75, 3.0, 4.25, 5.5])
    assert durations == pytest.approx([0.52, 0.48, 1.0, 1.0, 1.0])
    p = playback(ready, durations)
    assert (p.first_playable_s, p.stall_s) == pytest.approx((1.15, 1.35))


def test_bad_schedules_raise():
    for args in (([], 1, 10.0), ([10, 0], 2, 10.0), ([10], 0, 10.0), ([10], 1, 0.0)):
        with pytest.raises(ValueError):
            segment_schedule(*args, keyframes=EVERY_SECOND)
