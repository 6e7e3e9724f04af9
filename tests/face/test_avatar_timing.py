"""A video avatar keeps its own timing: output frames sample it by time (25, 30 and 60 fps
clips into a 25 fps video), and audio longer than the clip plays it forward then backward
(ping-pong) or from the start again (repeat). Checked through the decoded pixels: each clip
frame carries its index as a grey level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.face_clips import code_frame, code_level, read_code, write_video

from lipbench import face

pytestmark = pytest.mark.slow  # clips encoded and decoded at several frame rates

N = 30  # clip frames
OUT_FPS = 25
N_OUT = 110  # output frames: more than one pass of every clip (60 fps: 0.5 s of clip)


def _expected(i: int, fps: int, loop: str) -> int:
    p = i * fps // OUT_FPS  # integer arithmetic: the frame on screen at i / 25 s
    if loop == "repeat":
        return p % N
    q = p % (2 * N - 2)
    return q if q < N else 2 * N - 2 - q


@pytest.fixture(scope="module", params=[25, 30, 60])
def clip(request, tmp_path_factory) -> tuple[Path, int]:
    fps = request.param
    path = tmp_path_factory.mktemp("timing") / f"clip{fps}.mp4"
    return write_video(path, [code_frame(k) for k in range(N)], fps), fps


@pytest.mark.parametrize("loop", ["pingpong", "repeat"])
def test_output_frames_sample_the_clip_by_time(clip, loop: str) -> None:
    path, fps = clip
    av = face.load_avatar(path)
    assert len(av) == N and av.fps == pytest.approx(fps)
    fb = face.detect_faces(av, n_out=N_OUT, fps=OUT_FPS, loop=loop)
    want = [_expected(i, fps, loop) for i in range(N_OUT)]
    assert [fb.avatar_index(i) for i in range(N_OUT)] == want
    # the pixels agree: read the code strip of what each output frame shows
    got = [read_code(av.frame(fb.avatar_index(i))) for i in range(N_OUT)]
    assert max(abs(g - code_level(k)) for g, k in zip(got, want, strict=True)) <= 2
    # detection looked only at the frames used: 0.4 s of output at 60 fps shows 10 of the
    # first 22 frames
    assert list(fb.index) == sorted(set(want))
    short = face.detect_faces(av, n_out=10, fps=OUT_FPS, loop=loop)
    assert list(short.index) == sorted({i * fps // OUT_FPS for i in range(10)})
    if fps == 60:
        assert len(short.index) == 10 and short.index[-1] == 21
    if loop == "pingpong":  # no jump: consecutive output frames show neighbouring frames
        step = max(abs(a - b) for a, b in zip(want, want[1:], strict=False))
        assert step <= -(-fps // OUT_FPS)


def test_the_clip_is_read_forward_once(clip) -> None:
    """Reading the frames of a whole ping-pong job decodes each frame a bounded number of
    times: forward once, backward once per kept block."""
    path, fps = clip
    av = face.load_avatar(path)
    fb = face.detect_faces(av, n_out=N_OUT, fps=OUT_FPS)
    assert av.video is not None
    av.release()
    before = av.video.decoded
    for i in range(N_OUT):
        av.frame(fb.avatar_index(i))
    decoded = av.video.decoded - before
    passes = N_OUT * fps / OUT_FPS / N  # how many times the output runs through the clip
    assert decoded <= 2.5 * passes * N
    arr = np.array([fb.avatar_index(i) for i in range(N_OUT)])
    assert arr.max() == N - 1 and arr.min() == 0


def test_each_thread_reads_through_its_own_decoder(clip) -> None:
    """Two threads read the same avatar (two chunks of one job in one process): each gets
    the right frames, and one thread's release leaves the other's decoder running."""
    import threading

    path, _ = clip
    av = face.load_avatar(path)
    assert av.video is not None
    got: dict[str, list[int]] = {}
    go = threading.Barrier(2)

    def read(name: str, order: list[int], release_midway: bool) -> None:
        out = []
        for j, k in enumerate(order):
            if j == 3:
                go.wait()  # both threads have a decoder open here
                if release_midway:
                    av.release()
            out.append(read_code(av.frame(k)))
        got[name] = out

    fwd, back = list(range(0, 12)), list(range(N - 1, N - 13, -1))
    threads = [
        threading.Thread(target=read, args=("fwd", fwd, True)),
        threading.Thread(target=read, args=("back", back, False)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, order in (("fwd", fwd), ("back", back)):
        assert max(abs(g - code_level(k)) for g, k in zip(got[name], order, strict=True)) <= 2
    av.release()  # both threads have ended: every decoder is closed
    assert not av.video._decoders


def test_variable_frame_rate_video_is_read_in_time(tmp_path: Path) -> None:
    """A phone-style VFR file (20 frames at 25 fps, then 20 at 50 fps) is read resampled to
    its average rate: frame k shows about the picture on screen at k / fps (within 4 source
    frames = 80 ms in the 50 fps part, forward and after seeks alike; measured: 3.2 forward)
    and the length follows the duration."""
    import random
    import subprocess

    import imageio_ffmpeg

    src = write_video(tmp_path / "cfr.mp4", [code_frame(k) for k in range(40)], 25)
    vfr = tmp_path / "vfr.mp4"
    pts = "setpts='if(lt(N,20),N/25/TB,(20/25+(N-20)/50)/TB)'"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src),
           "-vf", pts, "-fps_mode", "passthrough", "-enc_time_base", "1:1000",
           "-video_track_timescale", "1000", "-c:v", "libx264", "-crf", "10", str(vfr)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    av = face.load_avatar(vfr)
    assert av.video is not None and av.video.cfr
    fps = av.fps
    assert fps is not None and len(av) == int(1.2 * fps)  # 1.2 s long

    def shown(t: float) -> float:  # source frame on screen at time t
        return 25 * t if t < 0.8 else 20 + (t - 0.8) * 50

    def index(frame: np.ndarray) -> int:
        return round((read_code(frame) - 8) / 6)

    forward = [index(av.frame(k)) for k in range(len(av))]
    order = list(range(len(av)))
    random.Random(0).shuffle(order)
    seeks = {}
    for k in order:
        av.release()
        seeks[k] = index(av.frame(k))
    for k in range(len(av)):
        assert abs(forward[k] - shown(k / fps)) <= 4, k
        assert abs(seeks[k] - shown(k / fps)) <= 4, k
    assert forward == sorted(forward)  # never backward in time
