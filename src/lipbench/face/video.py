"""A video avatar's frames, decoded on demand by index — never the whole video in memory.

Frames are read by seeking (``ffmpeg -ss`` before ``-i``: a keyframe seek, then an exact
decode up to the time) and then decoding forward; a few recent frames are kept, so reading
forward (the usual case) decodes each frame once and reading backward (ping-pong looping)
re-seeks once per :data:`BLOCK` frames. Memory is :data:`BLOCK` frames whatever the length.
The object pickles as the path and its metadata (no frames, no ffmpeg process): a chunk task
carries the avatar by reference, and each process opens its own decoder.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lipbench.errors import InputError
from lipbench.face.fit import Fit

log = logging.getLogger(__name__)


def _not_rotation_note(record: logging.LogRecord) -> bool:
    # imageio-ffmpeg logs a warning at every open of a rotated (phone) video; ffmpeg's
    # auto-rotation is what we want, so that note is noise.
    return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_not_rotation_note)

# Frames kept after decoding (1080p: ~6 MB each). Backward reads re-seek once per BLOCK.
BLOCK = 12
# A forward jump up to this many frames is decoded through; a longer one seeks.
MAX_FORWARD_DECODE = 48


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


class VideoFrames:
    """Frames ``0 .. n-1`` of a video file, fitted (``fit``) and BGR uint8, read on demand."""

    def __init__(self, path: str | Path, n: int, fps: float, size: tuple[int, int], fit: Fit):
        self.path = str(path)
        self.n = int(n)
        self.fps = float(fps)
        self.size = size  # decoded (width, height), after ffmpeg's auto-rotation
        self.fit = fit
        self.seeks = 0  # how many times a decoder was (re)started: for tests and benchmarks
        self.decoded = 0
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._gen: Iterator[Any] | None = None
        self._pos = 0  # index of the next frame the open decoder yields
        self._buf: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_gen", "_pos", "_buf"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        """Stop the decoder and drop the kept frames (reading again reopens)."""
        with self._lock:
            self._close()
            self._buf.clear()

    def _close(self) -> None:
        if self._gen is not None:
            self._gen.close()  # type: ignore[attr-defined]  # stops the ffmpeg subprocess
            self._gen = None

    def _open(self, k: int) -> None:
        import imageio_ffmpeg

        self._close()
        # Seek to half a frame before frame k: ffmpeg's exact input seek then starts at the
        # first frame whose time is >= that, i.e. frame k (times relative to the start).
        t = max(0.0, (k - 0.5) / self.fps)
        params = ["-ss", f"{t:.6f}"] if k > 0 else None
        gen = imageio_ffmpeg.read_frames(self.path, input_params=params)
        next(gen)  # the metadata
        self._gen, self._pos = gen, k
        self.seeks += 1

    def _next(self) -> np.ndarray | None:
        assert self._gen is not None
        w, h = self.size
        try:
            raw = next(self._gen)
        except StopIteration:
            self._close()
            return None
        if len(raw) != w * h * 3:
            raise InputError(
                f"avatar video {self.path} changes frame size at frame {self._pos}",
                "re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4)",
            )
        rgb = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
        self.decoded += 1
        return _readonly(self.fit.apply(rgb[:, :, ::-1]))

    def _keep(self, k: int, frame: np.ndarray) -> None:
        self._buf[k] = frame
        self._buf.move_to_end(k)
        while len(self._buf) > BLOCK:
            self._buf.popitem(last=False)

    def get(self, k: int) -> np.ndarray:
        """Frame ``k`` (read-only BGR uint8), 0 <= k < n."""
        if not 0 <= k < self.n:
            raise IndexError(f"avatar frame {k} outside 0..{self.n - 1}")
        with self._lock:
            hit = self._buf.get(k)
            if hit is not None:
                self._buf.move_to_end(k)
                return hit
            if self._gen is None or not self._pos <= k <= self._pos + MAX_FORWARD_DECODE:
                behind = self._gen is not None and k < self._pos
                # going backward: start a block early, so the next BLOCK-1 frames are kept
                self._open(max(0, k - BLOCK + 1) if behind else k)
            last: np.ndarray | None = None
            while self._pos <= k:
                frame = self._next()
                if frame is None:  # fewer decodable frames than counted: hold the last one
                    if last is None and self._buf:
                        last = next(reversed(self._buf.values()))
                    if last is None:
                        raise InputError(
                            f"avatar video {self.path}: frame {k} cannot be decoded",
                            "re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4)",
                        )
                    log.warning("avatar %s ends before frame %d; repeating frame", self.path, k)
                    self._keep(k, last)
                    return last
                self._keep(self._pos, frame)
                last = frame
                self._pos += 1
            assert last is not None
            return last
