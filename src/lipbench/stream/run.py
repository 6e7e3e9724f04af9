"""Streaming inside one pool job: each chunk's stream target, the publisher over all of
them, and the run's latency timings (used by ``pipeline.Workbench``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..jobs import OutputNames
from ..record import StreamInfo, Timings
from ..video import EncoderSettings
from .playlist import StreamPublisher
from .segments import StreamTarget
from .stall import playback


def stream_target(cfg: dict[str, Any], stage: OutputNames, plan: Any, chunk: Any) -> StreamTarget:
    """Chunk ``chunk`` streams into <side>/stream/chunk_NNN with its slice of the audio."""
    return StreamTarget(
        seg_dir=str(stage.side / "stream" / f"chunk_{chunk.index:03d}"),
        audio=str(stage.audio),
        start_s=chunk.frame_start / plan.fps,
        duration_s=(chunk.frame_end - chunk.frame_start) / plan.fps,
        audio_bitrate=cfg["video"]["audio_bitrate"],
    )


def start_publisher(stage: OutputNames, tasks: list[Any], enc: EncoderSettings,
                    on_stream: Callable[[Path], None] | None) -> StreamPublisher:  # fmt: skip
    return StreamPublisher(stage.side / "stream", [t.stream for t in tasks], enc, on_stream).start()


def latency(timings: Timings, origin: tuple[float, str], publisher: StreamPublisher | None,
            video_ready_ts: float, final_playlist: Path) -> StreamInfo | None:  # fmt: skip
    """Fill the latency timings: a streamed run from its segments' ready times, a plain one
    from when its MP4 was ready (it plays only then, without stalls)."""
    origin_ts, timings.latency_origin = origin
    if publisher is None:
        timings.first_playable_s = round(video_ready_ts - origin_ts, 4)
        timings.stall_s = 0.0
        return None
    ready = [round(ts - origin_ts, 4) for ts in publisher.ready_ts]
    durations = publisher.durations_s()
    played = playback(ready, durations)
    timings.first_playable_s = round(played.first_playable_s, 4)
    timings.stall_s = round(played.stall_s, 4)
    return StreamInfo(
        playlist=str(final_playlist),
        segment_s=publisher.keyframe_s, segments=len(ready), ready_s=ready, durations_s=durations,
    )  # fmt: skip
