"""Latency of a streamed video from when its segments became ready.

A player starts when the first segment is ready and plays at the video's own rate; before a
later segment plays it must wait until that segment is ready. The waits add up to the stall
time. Times are seconds from one origin (process start, request received, or job start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Playback:
    first_playable_s: float  # the first segment ready: when playback can start
    stall_s: float  # total wait after playback started
    ends_s: float  # when playback of the last segment ends


def playback(ready_s: Sequence[float], durations_s: Sequence[float]) -> Playback:
    """Simulate playback of segments (in play order) that became ready at ``ready_s`` and
    last ``durations_s`` each."""
    if not ready_s or len(ready_s) != len(durations_s):
        raise ValueError("need one ready time per segment, at least one segment")
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
