"""Latency of a streamed video from when its segments became ready.

A player starts when the first segment is ready and plays at the video's own rate; before a
later segment plays it must wait until that segment is ready. The waits add up to the stall
time. Times are seconds from one origin (process start, request received, or job start).

``segment_schedule`` predicts those ready times for a plan (the planner's ``latency``
objective feeds them to ``playback``), so measured and predicted latency share one model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..keyframes import Keyframes
from ..schedule import replica_queues


@dataclass(frozen=True)
class Playback:
    first_playable_s: float  # the first segment ready: when playback can start
    stall_s: float  # total wait after playback started
    ends_s: float  # when playback of the last segment ends

    @property
    def latency_s(self) -> float:
        """What a viewer waits in all: before the first frame plus every stall (= when
        playback ends − the video's length). The ``latency`` plan objective minimises it."""
        return self.first_playable_s + self.stall_s


def _check(ready_s: Sequence[float], durations_s: Sequence[float]) -> None:
    if not ready_s or len(ready_s) != len(durations_s):
        raise ValueError(
            f"need one ready time per segment and at least one segment, got {len(ready_s)} "
            f"ready time(s) for {len(durations_s)} duration(s)"
        )
    if not all(math.isfinite(x) for x in [*ready_s, *durations_s]):
        raise ValueError("ready times and durations must be finite numbers")
    if min(durations_s) < 0:
        raise ValueError(f"segment durations must be ≥ 0, got {min(durations_s)}")


def playback(ready_s: Sequence[float], durations_s: Sequence[float]) -> Playback:
    """Simulate playback of segments (in play order) that became ready at ``ready_s`` and
    last ``durations_s`` each."""
    _check(ready_s, durations_s)
    clock = ready_s[0]
    stall = 0.0
    for ready, duration in zip(ready_s, durations_s, strict=True):
        if ready > clock:
            stall += ready - clock
            clock = ready
        clock += duration
    return Playback(ready_s[0], stall, clock)


def stall_seconds(ready_s: Sequence[float], durations_s: Sequence[float]) -> float:
    return playback(ready_s, durations_s).stall_s


def segment_schedule(
    chunk_frames: Sequence[int],
    replicas: int,
    render_fps: float,
    keyframes: Keyframes,
    start_s: float = 0.0,
) -> tuple[list[float], list[float]]:
    """Predicted (ready_s, durations_s) of every segment, in play order.

    Segments are cut where ``keyframes`` puts them. Each replica renders its chunks one
    after another as ``schedule.replica_queues`` orders a streamed job's, at ``render_fps`` frames/s,
    from ``start_s`` (when the first frame starts rendering). A segment is ready when its last
    frame is rendered. Batching and the encoder's own delay are left to ``start_s``."""
    if not chunk_frames or min(chunk_frames) < 1 or replicas < 1 or render_fps <= 0:
        raise ValueError(
            f"need chunks of ≥ 1 frame, ≥ 1 replica and a render rate > 0; got "
            f"{list(chunk_frames)}, {replicas}, {render_fps}"
        )
    begins: dict[int, float] = {}  # chunk → when its first frame starts rendering
    for queue in replica_queues(chunk_frames, replicas, streamed=True):
        t = start_s
        for k in queue:
            begins[k] = t
            t += chunk_frames[k] / render_fps
    ready: list[float] = []
    durations: list[float] = []
    first_frame = 0
    for k, n in enumerate(chunk_frames):
        b = keyframes.bounds(first_frame, n)
        first_frame += n
        for a, z in zip(b[:-1], b[1:], strict=True):
            ready.append(begins[k] + z / render_fps)
            durations.append((z - a) / keyframes.fps)
    return ready, durations
