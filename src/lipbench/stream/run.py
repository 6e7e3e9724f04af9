"""Streaming inside one pool job: each chunk's stream target, the publisher over all of
them, and the run's latency figures (used by ``pipeline``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..outputs import OutputNames
from ..record import StreamInfo
from ..video import EncoderSettings
from .playlist import StreamPublisher
from .segments import StreamTarget
from .stall import playback


def stream_target(audio_bitrate: str, stage: OutputNames, plan: Any, chunk: Any) -> StreamTarget:
    """Chunk ``chunk`` streams into <side>/stream/chunk_NNN with its slice of the audio."""
    return StreamTarget(
        seg_dir=str(stage.stream / f"chunk_{chunk.index:03d}"),
        audio=str(stage.audio),
        start_s=chunk.frame_start / plan.fps,
        duration_s=(chunk.frame_end - chunk.frame_start) / plan.fps,
        audio_bitrate=audio_bitrate,
    )


def start_publisher(stage: OutputNames, targets: list[StreamTarget], enc: EncoderSettings,
                    on_stream: Callable[[Path], None] | None) -> StreamPublisher:  # fmt: skip
    return StreamPublisher(stage.stream, targets, enc, on_stream).start()


@dataclass(frozen=True)
class Latency:
    """When a viewer could start watching, from the latency origin."""

    origin: str  # what the seconds count from: "process start" | "request" | "job start"
    first_playable_s: float
    stall_s: float
    stream: StreamInfo | None  # a streamed run's segments


def latency(origin: tuple[float, str], publisher: StreamPublisher | None,
            video_ready_ts: float, final_playlist: Path) -> Latency:  # fmt: skip
    """A streamed run's latency from its segments' ready times; a plain one's from when its
    MP4 was ready (it plays only then, without stalls)."""
    origin_ts, what = origin
    if publisher is None:
        return Latency(what, round(video_ready_ts - origin_ts, 4), 0.0, None)
    ready = [round(ts - origin_ts, 4) for ts in publisher.ready_ts]
    durations = publisher.durations_s()
    played = playback(ready, durations)
    info = StreamInfo(
        playlist=str(final_playlist),
        segment_s=publisher.keyframe_s, segments=len(ready), ready_s=ready, durations_s=durations,
    )  # fmt: skip
    return Latency(what, round(played.first_playable_s, 4), round(played.stall_s, 4), info)
