"""Where every encode puts its keyframes — one rule for the encoder (as an ffmpeg expression),
the stream segmenter's cuts, the publisher's checks and the latency model.

A frame of the WHOLE video is a keyframe when it is the first frame at or past a whole
multiple of ``every_s`` seconds, or the frame at ``first_s`` (an early extra one: a stream's
first segment is short, so it plays sooner). A piece of the video (a chunk) also starts on a
keyframe. Streamed or not, every encode follows this rule, so a chunk's segments line up with
a sequential run's and a streamed result stays frame-equal to a plain one."""

from __future__ import annotations

import math
from dataclasses import dataclass

# Frames that land on a slot to within float rounding still count as on it.
_EPS = 1e-6


@dataclass(frozen=True)
class Keyframes:
    fps: float
    every_s: float = 1.0
    first_s: float = 0.0  # 0: no early keyframe

    @property
    def _period(self) -> float:
        """Frames per slot (need not be whole: 29.97 fps)."""
        return self.every_s * self.fps

    @property
    def _early(self) -> int:
        """The whole video's frame index of the early keyframe (the first frame at or past
        first_s, like a slot), 0 for none."""
        early = math.ceil(self.first_s * self.fps - _EPS)
        return early if 0 < self.first_s < self.every_s and early > 0 else 0

    def is_keyframe(self, frame: int) -> bool:
        """Frame ``frame`` (index in the whole video, ≥ 1) starts a new slot, or is the early one."""
        p = self._period
        return (
            math.floor((frame + _EPS) / p) > math.floor((frame - 1 + _EPS) / p)
            or frame == self._early
        )

    def bounds(self, first_frame: int, n_frames: int) -> list[int]:
        """[0, …, n_frames]: where a piece of ``n_frames`` frames starting at whole-video frame
        ``first_frame`` starts its segments (indices from the piece's start)."""
        if n_frames < 1 or first_frame < 0 or self.fps <= 0 or self.every_s <= 0:
            raise ValueError(
                f"need frames ≥ 1, a first frame ≥ 0, fps > 0 and keyframes every > 0 s; got "
                f"{n_frames}, {first_frame}, {self.fps}, {self.every_s}"
            )
        cuts = [n for n in range(1, n_frames) if self.is_keyframe(first_frame + n)]
        return [0, *cuts, n_frames]

    def ffmpeg_expr(self, first_frame: int) -> str:
        """``is_keyframe`` as ffmpeg's ``-force_key_frames expr:`` for a piece starting at
        ``first_frame`` (``n`` counts the piece's frames). The same double arithmetic as
        above: the constants are written with Python's round-trip repr."""
        whole, p = f"(n+{first_frame})", repr(self._period)
        slot = f"gt(floor(({whole}+{_EPS!r})/{p}),floor(({whole}-1+{_EPS!r})/{p}))"
        early = f"+eq({whole},{self._early})" if self._early else ""
        return f"expr:if(eq(n,0),1,gte({slot}{early},1))"
