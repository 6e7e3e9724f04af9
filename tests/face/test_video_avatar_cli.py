"""A video avatar through the command line, as a user brings one: one person tracked,
frames without a face left as they are (and counted in run.json), the avatar's timing kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import astronaut_bgr, run_cli, write_video

from lipbench import audio, video


@pytest.mark.slow
def test_faceless_frames_are_written_unchanged_and_counted(config_file, speech_wav, tmp_path):
    face = astronaut_bgr()
    black = np.zeros_like(face)
    frames = [face] * 25 + [black] * 10 + [face] * 65  # 4 s at 25 fps, a 0.4 s gap
    clip = write_video(tmp_path / "me.mp4", frames, fps=25.0)
    out = tmp_path / "r" / "talk.mp4"
    proc = run_cli("generate", "--audio", speech_wav, "--avatar", clip, "--out", out,
                   "--no-progress", config=config_file, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((tmp_path / "r" / "talk.run.json").read_text())
    n = rec["frames"]
    assert n == round(audio.duration_s(speech_wav) * 25) and n < 100  # no loop needed
    assert rec["face"]["ranges_without_face"] == [[25, 35]]
    assert rec["face"]["frames_without_face"] == 10 and rec["face"]["detector"] == "yunet"
    out_frames = list(video.read_frames(out))
    assert len(out_frames) == n
    for i in range(25, 35):  # no patch: the black frame as it was (the label is at the top)
        assert int(out_frames[i][40:].max()) <= 20, i
    x1, y1, x2, y2 = 160, 80, 290, 230  # around the mouth: a patch is pasted with a face
    assert float(np.abs(out_frames[10][y1:y2, x1:x2].astype(int) - face[y1:y2, x1:x2]).mean()) > 1
