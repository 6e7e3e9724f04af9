"""lipbench.ffmpeg: one clear line for each way ffmpeg fails; argument lists only."""

from __future__ import annotations

import pytest

from lipbench.errors import MediaError
from lipbench.ffmpeg import explain_failure, ffmpeg_exe, run_ffmpeg


@pytest.mark.parametrize(
    ("stderr", "needle"),
    [
        ("x.mp4: No space left on device\n", "the disk is full"),
        ("in.mp3: Invalid data found when processing input\n", "not a readable audio/video file"),
        ("a.wav: No such file or directory\n", "file not found"),
        ("something else\nlast words\n", "ffmpeg failed (last words)"),
        ("", "no error output"),
    ],
)
def test_failures_become_one_line(stderr, needle):
    err = explain_failure(stderr, "converting a.wav")
    assert needle in str(err) and "\n" not in str(err) and str(err).startswith("converting a.wav")


def test_a_missing_binary_and_a_failing_call_are_media_errors(tmp_path):
    with pytest.raises(MediaError, match="ffmpeg binary not found"):
        ffmpeg_exe("/nonexistent/ffmpeg")
    assert ffmpeg_exe("auto")  # imageio-ffmpeg's binary
    odd = tmp_path / "it's $(odd); name.wav"  # passed as one argument, never to a shell
    with pytest.raises(MediaError, match="file not found|not a readable"):
        run_ffmpeg(["-i", odd, "-f", "null", "-"], "reading it")
    assert not (tmp_path / "odd").exists()
