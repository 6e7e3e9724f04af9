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

# Frames kept after a backward seek (1080p: ~6 MB each): reading backward (ping-pong)
# re-seeks once per BLOCK frames. Reading forward keeps FORWARD_KEEP.
BLOCK = 12
FORWARD_KEEP = 2
# A forward jump up to this many frames is decoded through; a longer one seeks.
MAX_FORWARD_DECODE = 48


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


class _Decoder:
    """One ffmpeg decoder and the frames it kept; used by one thread at a time."""

    def __init__(self) -> None:
        self.owner = threading.current_thread()
        self.gen: Iterator[Any] | None = None
        self.pos = 0  # index of the next frame the open decoder yields
        self.keep = FORWARD_KEEP
        self.buf: OrderedDict[int, np.ndarray] = OrderedDict()

    def close(self) -> None:
        if self.gen is not None:
            self.gen.close()  # type: ignore[attr-defined]  # stops the ffmpeg subprocess
            self.gen = None
        self.buf.clear()


class VideoFrames:
    """Frames ``0 .. n-1`` of a video file, fitted (``fit``) and BGR uint8, read on demand.

    Each thread reads through its own decoder, so the network's thread (cropping) and the
    encoder's (pasting) both read forward without holding frames for each other."""

    def __init__(
        self,
        path: str | Path,
        n: int,
        fps: float,
        size: tuple[int, int],
        fit: Fit,
        cfr: bool = False,
    ):
        self.path = str(path)
        self.n = int(n)
        self.fps = float(fps)
        # a variable-frame-rate file is read resampled to ``fps`` (ffmpeg -fps_mode cfr):
        # frame k is then about what is on screen at k / fps. Forward reads and reads after
        # a seek may pick neighbouring source frames (measured: ≤ 3 apart on a 25/50 fps
        # clip), so chunks of such an avatar can differ from one pass by a source frame
        # or two; a constant-rate file is read exactly either way (tested).
        self.cfr = cfr
        self.size = size  # decoded (width, height), after ffmpeg's auto-rotation
        self.fit = fit
        self.seeks = 0  # how many times a decoder was (re)started: for tests and benchmarks
        self.decoded = 0
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()  # guards the registry and the counters
        self._local = threading.local()
        self._decoders: list[_Decoder] = []

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_local", "_decoders"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        """Stop the decoders of this thread and of threads that have ended, and drop their
        kept frames (reading again reopens). Another live thread's decoder is left alone:
        two chunks of one job may render at once in one process."""
        me = threading.current_thread()
        with self._lock:
            done = [d for d in self._decoders if d.owner is me or not d.owner.is_alive()]
            for d in done:
                d.close()
            self._decoders = [d for d in self._decoders if d not in done]
        if getattr(self._local, "decoder", None) is not None:
            self._local.decoder = None

    def _decoder(self) -> _Decoder:
        d = getattr(self._local, "decoder", None)
        if d is None:
            d = _Decoder()
            self._local.decoder = d
            with self._lock:
                self._decoders.append(d)
        return d

    def _open(self, d: _Decoder, k: int) -> None:
        import imageio_ffmpeg

        if d.gen is not None:
            d.gen.close()  # type: ignore[attr-defined]
        # Seek to half a frame before frame k: ffmpeg's exact input seek then starts at the
        # first frame whose time is >= that, i.e. frame k (times relative to the start).
        t = max(0.0, (k - 0.5) / self.fps)
        params = ["-ss", f"{t:.6f}"] if k > 0 else None
        out = ["-fps_mode", "cfr", "-r", f"{self.fps:.6f}"] if self.cfr else None
        # bgr24 straight from ffmpeg: the same values as rgb24 reversed (checked), no copy
        gen = imageio_ffmpeg.read_frames(
            self.path, pix_fmt="bgr24", input_params=params, output_params=out
        )
        next(gen)  # the metadata
        d.gen, d.pos = gen, k
        with self._lock:
            self.seeks += 1

    def _next(self, d: _Decoder) -> np.ndarray | None:
        assert d.gen is not None
        w, h = self.size
        try:
            raw = next(d.gen)
        except StopIteration:
            d.gen.close()  # type: ignore[attr-defined]
            d.gen = None
            return None
        if len(raw) != w * h * 3:
            raise InputError(
                f"avatar video {self.path} changes frame size at frame {d.pos}",
                "re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4)",
            )
        bgr = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)  # read-only, no copy
        with self._lock:
            self.decoded += 1
        return _readonly(self.fit.apply(bgr))

    @staticmethod
    def _keep(d: _Decoder, k: int, frame: np.ndarray) -> None:
        d.buf[k] = frame
        d.buf.move_to_end(k)
        while len(d.buf) > d.keep:
            d.buf.popitem(last=False)

    def get(self, k: int) -> np.ndarray:
        """Frame ``k`` (read-only BGR uint8), 0 <= k < n."""
        if not 0 <= k < self.n:
            raise IndexError(f"avatar frame {k} outside 0..{self.n - 1}")
        d = self._decoder()
        hit = d.buf.get(k)
        if hit is not None:
            d.buf.move_to_end(k)
            return hit
        if d.gen is None or not d.pos <= k <= d.pos + MAX_FORWARD_DECODE:
            behind = d.gen is not None and k < d.pos
            # going backward: start a block early and keep it, so the next BLOCK-1 backward
            # reads are hits
            d.keep = BLOCK if behind else FORWARD_KEEP
            self._open(d, max(0, k - BLOCK + 1) if behind else k)
        last: np.ndarray | None = None
        while d.pos <= k:
            frame = self._next(d)
            if frame is None:  # fewer decodable frames than counted: hold the last one
                if last is None and d.buf:
                    last = next(reversed(d.buf.values()))
                if last is None:
                    raise InputError(
                        f"avatar video {self.path}: frame {k} cannot be decoded",
                        "re-encode it (e.g. ffmpeg -i in.mov -c:v libx264 out.mp4)",
                    )
                log.warning("avatar %s ends before frame %d; repeating a frame", self.path, k)
                self._keep(d, k, last)
                return last
            self._keep(d, d.pos, frame)
            last = frame
            d.pos += 1
        assert last is not None
        return last
