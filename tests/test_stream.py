"""Streaming: segments as frames render, the playlist in play order, and a streamed result
frame-equal to a plain one (the stall arithmetic itself: tests/test_stall.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import run_cli

from lipbench import video
from lipbench.stream.playlist import StreamPublisher
from lipbench.stream.segments import SEGMENT_LIST, SegmentWriter, StreamTarget, read_segment_list

ENC = video.EncoderSettings(fps=25.0)


def _frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, i, axis=1) for i in range(n)]


def _wav(path: Path, seconds: float) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    return path


def _max_diff(a: Path, b: Path) -> int:
    fa, fb = list(video.read_frames(a)), list(video.read_frames(b))
    assert len(fa) == len(fb)
    return max(
        int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(fa, fb, strict=True)
    )


def test_segment_writer_cuts_at_keyframes_and_equals_a_plain_encode(tmp_path):
    frames = _frames(60)  # 2.4 s at 25 fps → segments of 1 s, 1 s, 0.4 s
    wav = _wav(tmp_path / "a.wav", 4.0)
    target = StreamTarget(str(tmp_path / "seg"), str(wav), start_s=1.0, duration_s=2.4)
    with SegmentWriter(tmp_path / "chunk.mp4", 64, 48, ENC, target) as w:
        for f in frames:
            w.write(f)
    segs = read_segment_list(tmp_path / "seg")
    assert [s.name for s in segs] == ["seg_00000.ts", "seg_00001.ts", "seg_00002.ts"]
    assert [round(s.duration_s, 1) for s in segs[1:]] == [1.0, 0.4]
    for s in segs:  # each segment carries its slice of the audio
        assert video.probe(tmp_path / "seg" / s.name).has_audio
    assert video.count_frames(tmp_path / "chunk.mp4")[0] == 60
    assert not video.probe(tmp_path / "chunk.mp4").has_audio  # video only, like a plain chunk
    video.encode_frames(frames, tmp_path / "plain.mp4", ENC)
    assert _max_diff(tmp_path / "chunk.mp4", tmp_path / "plain.mp4") <= 1


def test_segment_writer_failure_publishes_no_chunk(tmp_path):
    wav = _wav(tmp_path / "a.wav", 2.0)
    target = StreamTarget(str(tmp_path / "seg"), str(wav), 0.0, 1.0)
    with pytest.raises(RuntimeError), SegmentWriter(tmp_path / "c.mp4", 64, 48, ENC, target) as w:
        w.write(_frames(1)[0])
        raise RuntimeError("render failed")
    assert not (tmp_path / "c.mp4").exists()


def _fake_chunk(folder: Path, segments: list[tuple[float, float]], done: bool) -> None:
    """What a SegmentWriter leaves: the csv list ffmpeg writes, segment files, the chunk video."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (a, b) in enumerate(segments):
        (folder / f"seg_{i:05d}.ts").write_bytes(b"ts")
        lines.append(f"seg_{i:05d}.ts,{a:.6f},{b:.6f}\n")
    (folder / SEGMENT_LIST).write_text("".join(lines))
    if done:
        (folder.parent / f"{folder.name}.mp4").write_bytes(b"mp4")


def test_publisher_lists_segments_in_play_order(tmp_path):
    dirs = [tmp_path / "stream" / f"chunk_{i:03d}" for i in range(2)]
    videos = [tmp_path / "stream" / f"chunk_{i:03d}.mp4" for i in range(2)]
    seen: list[Path] = []
    pub = StreamPublisher(tmp_path / "stream", dirs, videos, 1.0, seen.append)
    pub.stream_dir.mkdir(parents=True)
    assert pub.poll() is False and seen == []
    # chunk 1 renders faster, but nothing of it is listed before chunk 0 is complete
    _fake_chunk(dirs[1], [(0, 1), (1, 1.6)], done=True)
    _fake_chunk(dirs[0], [(0, 1)], done=False)
    pub.poll()
    text = pub.playlist.read_text()
    assert re.findall(r"chunk_\d+/seg_\d+\.ts", text) == ["chunk_000/seg_00000.ts"]
    assert "#EXT-X-ENDLIST" not in text and seen == [pub.playlist]
    (dirs[0] / SEGMENT_LIST).write_text("seg_00000.ts,0,1\nseg_00001.ts,1,2\nseg_00002.ts,2,2.")
    pub.poll()  # a half-written line is not listed yet
    assert len(pub.entries) == 2
    _fake_chunk(dirs[0], [(0, 1), (1, 2), (2, 2.5)], done=True)
    pub._thread.start()
    pub.close(finished=True)
    text = pub.playlist.read_text()
    assert re.findall(r"chunk_\d+/seg_\d+\.ts", text) == [
        "chunk_000/seg_00000.ts", "chunk_000/seg_00001.ts", "chunk_000/seg_00002.ts",
        "chunk_001/seg_00000.ts", "chunk_001/seg_00001.ts",
    ]  # fmt: skip
    # chunk 1's timestamps start afresh: one discontinuity, right before its first segment
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    assert text.index("#EXT-X-DISCONTINUITY") < text.index("chunk_001/seg_00000.ts")
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert pub.durations_s() == [1.0, 1.0, 0.5, 1.0, 0.6]
    assert len(pub.ready_ts) == 5 and pub.ready_ts == sorted(pub.ready_ts)
    assert seen == [pub.playlist]  # announced once


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_streamed_result_equals_plain(workbench, speech_wav, session_dir, strategy):
    out = session_dir / "stream" / strategy
    kw = dict(audio=speech_wav, strategy=strategy, progress=False)
    if strategy == "parallel":
        kw.update(models=["gan", "gan"], chunks=2)
    announced: list[Path] = []
    plain = workbench.generate(out / "plain.mp4", **kw)
    streamed = workbench.generate(out / "live.mp4", stream=True, on_stream=announced.append, **kw)
    assert _max_diff(out / "plain.mp4", out / "live.mp4") <= 1
    assert plain.stream is None and plain.timings.stall_s == 0.0
    # the live playlist was announced from the staging folder; it now sits in live.files/
    assert len(announced) == 1 and ".staging-" in str(announced[0])
    final = out / "live.files" / "stream" / "index.m3u8"
    assert streamed.stream.playlist == str(final)
    text = final.read_text()
    uris = re.findall(r"^chunk_\d{3}/seg_\d{5}\.ts$", text, flags=re.M)
    assert len(uris) == streamed.stream.segments == len(streamed.stream.ready_s)
    assert all((final.parent / u).is_file() for u in uris)
    assert text.count("#EXT-X-DISCONTINUITY") == streamed.plan["n_chunks"] - 1
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert sum(streamed.stream.durations_s) == pytest.approx(streamed.frames / 25, abs=0.2)
    t = streamed.timings
    assert t.latency_origin == "process start"
    assert t.first_playable_s == streamed.stream.ready_s[0] >= t.first_frame_s
    assert t.stall_s is not None and t.stall_s >= 0
    on_disk = json.loads((out / "live.run.json").read_text())
    assert on_disk["stream"]["segments"] == len(uris)


def test_cli_stream_prints_the_playlist_before_the_result(config_file, speech_wav, tmp_path):
    proc = run_cli("generate", "--audio", speech_wav, "--out", tmp_path / "r.mp4", "--stream",
                   "--no-progress", config=config_file)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    live = [i for i, ln in enumerate(lines) if ln.startswith("streaming: ")]
    wrote = [i for i, ln in enumerate(lines) if ln.startswith("wrote ")]
    assert len(live) == 1 and wrote and live[0] < wrote[0]
    assert lines[live[0]].split()[1].endswith("index.m3u8")
    assert (tmp_path / "r.files" / "stream" / "index.m3u8").is_file()
    assert any(ln.startswith("stream: ") for ln in lines)


@pytest.mark.parametrize(("start_s", "expected"), [(0.0, [25, 25, 10]), (1.4, [15, 25, 20])])
def test_segments_fall_on_the_whole_videos_seconds(tmp_path, start_s, expected):
    """A chunk starting at 1.4 s cuts at 2 s, 3 s … of the whole video, like a sequential run."""
    wav = _wav(tmp_path / "a.wav", 5.0)
    target = StreamTarget(str(tmp_path / "seg"), str(wav), start_s=start_s, duration_s=2.4)
    with SegmentWriter(tmp_path / "c.mp4", 64, 48, ENC, target) as w:
        for f in _frames(60):
            w.write(f)
    segs = read_segment_list(tmp_path / "seg")
    assert [video.count_frames(tmp_path / "seg" / s.name)[0] for s in segs] == expected
