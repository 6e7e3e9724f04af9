"""The coordinator side of streaming: a thread that appends each chunk's finished segments to
a growing HLS playlist (``index.m3u8``) in play order — chunk 2's segments only after all of
chunk 1's — and notes when each became ready. ``close`` ends the playlist."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import MediaError
from ..outputs import PLAYLIST
from ..video import EncoderSettings
from .segments import (
    DONE,
    Segment,
    StreamTarget,
    ends_at_cut,
    keyframe_times,
    latest_attempt,
    read_segment_list,
)

POLL_S = 0.05


class StreamPublisher:
    """Watches each chunk's newest attempt (``segments.latest_attempt``), chunks in play order.
    A segment is listed once ffmpeg closed it at its keyframe cut, or — the chunk's last —
    once its attempt is done; a segment cut short (its writer died) is never listed. A
    retry's segments continue the list where the dead attempt's listed ones stopped: the cuts
    fall on the same frames, and what a player may have fetched stays on disk."""

    def __init__(self, stream_dir: Path, targets: list[StreamTarget], settings: EncoderSettings,
                 on_first: Callable[[Path], None] | None = None):  # fmt: skip
        self.stream_dir = Path(stream_dir)
        self.playlist = self.stream_dir / PLAYLIST
        self.chunk_dirs = [Path(t.seg_dir) for t in targets]
        self.origins = [t.origin_s for t in targets]
        self.keyframes = [keyframe_times(settings, t) for t in targets]
        self.fps = settings.fps
        self.target_s = max(1, math.ceil(settings.keyframe_s))
        self.keyframe_s = settings.keyframe_s
        self.on_first = on_first
        self.entries: list[tuple[str, Segment, bool]] = []  # (uri, segment, starts a chunk)
        self.ready_ts: list[float] = []  # epoch seconds each entry was listed
        self._chunk = 0  # the chunk being published
        self._taken = 0  # its segments already listed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-publisher", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> StreamPublisher:
        self.stream_dir.mkdir(parents=True, exist_ok=True)
        self._write(ended=False)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.poll()
                self._stop.wait(POLL_S)
        except BaseException as exc:  # noqa: BLE001 - re-raised by close()
            self._error = exc

    def poll(self) -> bool:
        """List whatever is newly ready; True once every chunk is fully listed."""
        grew = False
        while self._chunk < len(self.chunk_dirs):
            attempt = latest_attempt(self.chunk_dirs[self._chunk])
            if attempt is None:
                break
            done = (attempt / DONE).exists()  # before reading the list
            segments = read_segment_list(attempt, self.origins[self._chunk])
            for i in range(self._taken, len(segments)):
                if not done and not ends_at_cut(
                    segments[i], i, self.keyframes[self._chunk], self.fps
                ):
                    break
                uri = attempt.relative_to(self.stream_dir) / segments[i].name
                self.entries.append((uri.as_posix(), segments[i], i == 0 and self._chunk > 0))
                self.ready_ts.append(time.time())
                self._taken += 1
                grew = True
            if not done:
                break
            self._chunk += 1
            self._taken = 0
        if grew:
            self._write(ended=False)
            if self.on_first is not None:
                callback, self.on_first = self.on_first, None
                callback(self.playlist)
        return self._chunk == len(self.chunk_dirs)

    def close(self, finished: bool) -> None:
        """Stop watching; if the job ``finished``, list the rest and end the playlist."""
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if finished:
            if not self.poll():
                raise MediaError(
                    "streaming: a chunk finished without its segments",
                    "report this; the non-streamed path (without --stream) is unaffected",
                )
            self._write(ended=True)

    def durations_s(self) -> list[float]:
        return [round(seg.duration_s, 4) for _, seg, _ in self.entries]

    def _write(self, ended: bool) -> None:
        lines = [
            "#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{self.target_s}",
            "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:EVENT",
        ]  # fmt: skip
        for uri, seg, new_chunk in self.entries:
            if new_chunk:  # a new encode (the timestamps go on; the encoder state does not)
                lines.append("#EXT-X-DISCONTINUITY")
            lines += [f"#EXTINF:{seg.duration_s:.3f},", uri]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        write_text_atomic(self.playlist, "\n".join(lines) + "\n")
