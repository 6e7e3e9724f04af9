"""Where keyframes fall (``keyframes.Keyframes``): hand-worked cases, and the encoder's real
keyframes (read back from an encode) equal to the rule's for awkward rates and chunk starts."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from lipbench import video
from lipbench.ffmpeg import ffmpeg_exe
from lipbench.keyframes import Keyframes


def test_keyframes_every_second_of_the_whole_video():
    k = Keyframes(25, 1.0)
    assert k.bounds(0, 60) == [0, 25, 50, 60]
    assert k.bounds(0, 10) == [0, 10]  # shorter than one segment
    assert k.bounds(0, 50) == [0, 25, 50]  # no empty last segment
    # 0.5 s at 25 fps: the first frame at or past 12.5 frames is 13, then 25
    assert Keyframes(25, 0.5).bounds(0, 30) == [0, 13, 25, 30]
    # a chunk starting at whole-video frame 35 cuts at 50 and 75
    assert k.bounds(35, 60) == [0, 15, 40, 60]
    assert k.bounds(20, 10) == [0, 5, 10]
    with pytest.raises(ValueError):
        k.bounds(0, 0)


def test_an_early_keyframe_makes_the_first_segment_short():
    k = Keyframes(25, 1.0, first_s=0.5)
    assert k.bounds(0, 60) == [0, 13, 25, 50, 60]  # the first frame at or past 0.5 s
    assert k.bounds(30, 30) == [0, 20, 30]  # only the whole video's start has it
    assert Keyframes(25, 1.0, first_s=1.0).bounds(0, 60) == [0, 25, 50, 60]  # ≥ every_s: none
    assert Keyframes(25, 1.0, first_s=0.0).bounds(0, 30) == [0, 25, 30]


def test_slots_at_a_fractional_frame_rate():
    k = Keyframes(30000 / 1001, 1.0)  # 29.97 frames per slot: 30, 60, 90 (89.91 → 90)
    assert k.bounds(0, 100) == [0, 30, 60, 90, 100]
    assert Keyframes(30000 / 1001, 100.0).bounds(2990, 20) == [0, 8, 20]  # 2997.003 → frame 2998


def _keyframes_of(path) -> list[int]:
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-vf", "showinfo",
                           "-f", "null", "-"], capture_output=True, text=True, check=True)  # fmt: skip
    return [int(n) for n, key in re.findall(r"n:\s*(\d+) .*?iskey:(\d)", proc.stderr) if key == "1"]


@pytest.mark.parametrize(
    ("fps", "every_s", "first_s", "first_frame", "frames"),
    [
        (25.0, 1.0, 0.5, 0, 80),
        (25.0, 1.0, 0.5, 35, 80),
        (30000 / 1001, 1.0, 0.5, 0, 100),
        (30000 / 1001, 100.0, 0.0, 2990, 20),  # a slot a hair past a whole frame
        (24.0, 0.5, 0.0, 7, 60),
        (30.0, 2.0, 0.5, 45, 90),
    ],
)
def test_the_encoder_puts_keyframes_where_the_rule_says(
    tmp_path, fps, every_s, first_s, first_frame, frames
):
    enc = video.EncoderSettings(fps=fps, keyframe_s=every_s, first_segment_s=first_s)
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with video.FrameWriter(tmp_path / "x.mp4", 64, 48, enc, first_frame) as w:
        for i in range(frames):
            w.write(np.roll(base, i, axis=1))
    assert _keyframes_of(tmp_path / "x.mp4") == enc.keyframes.bounds(first_frame, frames)[:-1]
