"""ffmpeg I/O: encode, concat with stream copy, mux once, atomic outputs."""

from __future__ import annotations

import numpy as np
import pytest

from lipbench import video
from lipbench.audio import write_wav16k
from lipbench.errors import MediaError


def _frames(n: int, start: int = 0) -> list[np.ndarray]:
    return [np.full((64, 80, 3), (10 * (start + i)) % 250, np.uint8) for i in range(n)]


def test_encode_concat_mux(tmp_path):
    s = video.EncoderSettings(fps=25)
    assert video.encode_frames(_frames(12), tmp_path / "a.mp4", s) == 12
    video.encode_frames(_frames(18, 12), tmp_path / "b.mp4", s)
    video.concat_videos([tmp_path / "a.mp4", tmp_path / "b.mp4"], tmp_path / "ab.mp4")
    assert video.count_frames(tmp_path / "ab.mp4")[0] == 30
    write_wav16k(
        tmp_path / "x.wav", np.random.default_rng(0).standard_normal(int(1.2 * 16000)) * 0.1
    )
    video.mux_audio(tmp_path / "ab.mp4", tmp_path / "x.wav", tmp_path / "r.mp4")
    info = video.probe(tmp_path / "r.mp4")
    assert info.has_video and info.has_audio and (info.width, info.height) == (80, 64)
    assert video.count_frames(tmp_path / "r.mp4")[0] == 30
    frames = list(video.read_frames(tmp_path / "r.mp4"))
    assert len(frames) == 30 and frames[0].shape == (64, 80, 3)
    assert not list(tmp_path.glob(".*"))  # no temp or list files left behind


def test_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError), video.FrameWriter(out, 80, 64, video.EncoderSettings()) as w:
        w.write(_frames(1)[0])
        raise RuntimeError("crash mid-encode")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_writer_rejects_wrong_frame_size(tmp_path):
    with (
        pytest.raises(ValueError),
        video.FrameWriter(tmp_path / "x.mp4", 80, 64, video.EncoderSettings()) as w,
    ):
        w.write(np.zeros((10, 10, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists()


def test_probe_non_media(tmp_path):
    p = tmp_path / "x.mp4"
    p.write_text("nope")
    with pytest.raises(MediaError):
        video.probe(p)


def test_odd_frame_size_is_cropped_to_even(tmp_path):
    frames = [np.zeros((63, 81, 3), np.uint8) for _ in range(3)]
    video.encode_frames(frames, tmp_path / "odd.mp4", video.EncoderSettings())
    info = video.probe(tmp_path / "odd.mp4")
    assert (info.width, info.height) == (80, 62)


@pytest.mark.parametrize("fps", [25, 120])
def test_verify_result_refuses_a_timestamp_gap(tmp_path, fps):
    """All frames present but the second half shifted by one frame time: a player would hold
    a frame. At 120 fps a frame is 8 ms, finer than ffmpeg's 10 ms progress report."""
    video.encode_frames(_frames(20), tmp_path / "ok.mp4", video.EncoderSettings(fps=fps))
    from lipbench.ffmpeg import run_ffmpeg

    seconds = 20 / fps
    write_wav16k(tmp_path / "x.wav", np.zeros(int(seconds * 16000)))
    video.mux_audio(tmp_path / "ok.mp4", tmp_path / "x.wav", tmp_path / "fine.mp4")
    video.verify_result(tmp_path / "fine.mp4", 20, float(fps), seconds)  # no gap: accepted
    run_ffmpeg(["-i", tmp_path / "ok.mp4", "-c", "copy",
                "-bsf:v", "setts=ts=if(gte(N\\,10)\\,TS+DURATION\\,TS)", tmp_path / "gap.mp4"],
               what="making a gap")  # fmt: skip
    video.mux_audio(tmp_path / "gap.mp4", tmp_path / "x.wav", tmp_path / "r.mp4")
    assert video.count_frames(tmp_path / "r.mp4")[0] == 20
    with pytest.raises(MediaError, match="timestamp gap"):
        video.verify_result(tmp_path / "r.mp4", 20, float(fps), seconds)
