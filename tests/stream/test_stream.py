"""Streaming: segments as frames render, the playlist in play order, and a streamed result
frame-equal to a plain one (the stall arithmetic itself: tests/stream/test_stall.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import run_cli

from lipbench import video
from lipbench.errors import InputError
from lipbench.request import Hooks
from lipbench.stream.playlist import StreamPublisher
from lipbench.stream.segments import (
    AUDIO_LEAD_S,
    DONE,
    SEGMENT_LIST,
    SegmentWriter,
    StreamTarget,
    check_streamable,
    latest_attempt,
    read_segment_list,
)

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
    video.encode_frames(frames, tmp_path / "plain.mp4", ENC, first_frame=25)  # the same piece
    assert _max_diff(tmp_path / "chunk.mp4", tmp_path / "plain.mp4") <= 1


def test_segment_writer_failure_publishes_no_chunk(tmp_path):
    wav = _wav(tmp_path / "a.wav", 2.0)
    target = StreamTarget(str(tmp_path / "seg"), str(wav), 0.0, 1.0)
    with pytest.raises(RuntimeError), SegmentWriter(tmp_path / "c.mp4", 64, 48, ENC, target) as w:
        w.write(_frames(1)[0])
        raise RuntimeError("render failed")
    assert not (tmp_path / "c.mp4").exists()


def _fake_chunk(folder: Path, ends: list[float], done: bool, start_s: float = 0.0) -> None:
    """What one attempt of a SegmentWriter leaves: segment files, the csv list ffmpeg writes
    (stream time: the whole video's + AUDIO_LEAD_S; the first segment listed from 0), and
    the done mark once the encode ended. ``ends``: chunk-relative."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, start = [], 0.0
    for i, end in enumerate(ends):
        (folder / f"seg_{i:05d}.ts").write_bytes(f"{folder.name} {i}".encode())
        lines.append(f"seg_{i:05d}.ts,{start:.6f},{start_s + end + AUDIO_LEAD_S:.6f}\n")
        start = start_s + end + AUDIO_LEAD_S
    (folder / SEGMENT_LIST).write_text("".join(lines))
    if done:
        (folder / DONE).touch()


def _publisher(
    root: Path, durations: list[float], seen: list[Path] | None = None
) -> StreamPublisher:
    targets, start = [], 0.0
    for i, d in enumerate(durations):
        targets.append(StreamTarget(str(root / "stream" / f"chunk_{i:03d}"), "a.wav", start, d))
        start += d
    every_second = video.EncoderSettings(fps=25.0, first_segment_s=0.0)  # cuts at whole seconds
    announce = seen.append if seen is not None else None
    pub = StreamPublisher(root / "stream", targets, every_second, announce)
    pub.stream_dir.mkdir(parents=True)
    return pub


def _uris(pub: StreamPublisher) -> list[str]:
    return re.findall(r"^chunk_\S+\.ts$", pub.playlist.read_text(), flags=re.M)


def test_publisher_lists_segments_in_play_order(tmp_path):
    seen: list[Path] = []
    pub = _publisher(tmp_path, [2.5, 1.6], seen)  # chunk 1 starts at 2.5 s: cuts at 3 s, 4 s
    dirs = pub.chunk_dirs
    assert pub.poll() is False and seen == []
    # chunk 1 renders faster, but nothing of it is listed before chunk 0 is complete
    _fake_chunk(dirs[1], [0.5, 1.5, 1.6], done=True, start_s=2.5)
    _fake_chunk(dirs[0], [1.0], done=False)
    pub.poll()
    assert _uris(pub) == ["chunk_000/seg_00000.ts"]
    assert "#EXT-X-ENDLIST" not in pub.playlist.read_text() and seen == [pub.playlist]
    (dirs[0] / SEGMENT_LIST).write_text(
        (dirs[0] / SEGMENT_LIST).read_text() + "seg_00001.ts,1.064,2.064\nseg_00002.ts,2.064,2."
    )
    pub.poll()  # a half-written line is not listed yet
    assert len(pub.entries) == 2
    _fake_chunk(dirs[0], [1.0, 2.0, 2.5], done=True)
    pub._thread.start()
    pub.close(finished=True)
    text = pub.playlist.read_text()
    assert _uris(pub) == [
        "chunk_000/seg_00000.ts", "chunk_000/seg_00001.ts", "chunk_000/seg_00002.ts",
        "chunk_001/seg_00000.ts", "chunk_001/seg_00001.ts", "chunk_001/seg_00002.ts",
    ]  # fmt: skip
    # chunk 1 is a new encode: one discontinuity, right before its first segment
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    assert text.index("#EXT-X-DISCONTINUITY") < text.index("chunk_001/seg_00000.ts")
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert pub.durations_s() == pytest.approx([1.0, 1.0, 0.5, 0.5, 1.0, 0.1])
    assert len(pub.ready_ts) == 6 and pub.ready_ts == sorted(pub.ready_ts)
    assert seen == [pub.playlist]  # announced once


def test_publisher_never_lists_a_segment_cut_short_and_a_retry_goes_on(tmp_path):
    """A writer that died mid-segment (ffmpeg closed it at end of input) → that segment is
    never listed; the retry's folder continues the list, the listed files stay untouched."""
    pub = _publisher(tmp_path, [3.5])
    chunk = pub.chunk_dirs[0]
    _fake_chunk(chunk, [1.0, 1.6], done=False)  # the second ends 0.4 s before its cut at 2 s
    pub.poll()
    assert _uris(pub) == ["chunk_000/seg_00000.ts"]
    listed = (chunk / "seg_00000.ts").read_bytes()
    _fake_chunk(chunk / "retry_1", [1.0, 2.0], done=False)  # the retry, under way
    pub.poll()
    assert _uris(pub) == ["chunk_000/seg_00000.ts", "chunk_000/retry_1/seg_00001.ts"]
    _fake_chunk(chunk / "retry_1", [1.0, 2.0, 3.0, 3.5], done=True)
    assert pub.poll() is True
    assert _uris(pub) == ["chunk_000/seg_00000.ts", "chunk_000/retry_1/seg_00001.ts",
                          "chunk_000/retry_1/seg_00002.ts", "chunk_000/retry_1/seg_00003.ts"]  # fmt: skip
    assert (chunk / "seg_00000.ts").read_bytes() == listed
    assert sum(pub.durations_s()) == pytest.approx(3.5)


def test_a_retried_writer_keeps_the_first_attempts_segments(tmp_path):
    wav = _wav(tmp_path / "a.wav", 3.0)
    target = StreamTarget(str(tmp_path / "seg"), str(wav), 0.0, 2.0)
    with SegmentWriter(tmp_path / "c.mp4", 64, 48, ENC, target) as first:
        for f in _frames(50):
            first.write(f)
    before = {p.name: p.read_bytes() for p in (tmp_path / "seg").glob("seg_*.ts")}
    with SegmentWriter(tmp_path / "c.mp4", 64, 48, ENC, target) as again:
        for f in _frames(50):
            again.write(f)
    assert again.seg_dir == tmp_path / "seg" / "retry_1" and (again.seg_dir / DONE).is_file()
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "seg").glob("seg_*.ts")}
    assert latest_attempt(tmp_path / "seg") == again.seg_dir


KILLED_WRITER = """
import os, signal, sys, time
import numpy as np
from lipbench import video
from lipbench.stream.segments import SegmentWriter, StreamTarget
seg, wav, out = sys.argv[1:]
frames = [np.roll(np.arange(64 * 48 * 3, dtype=np.uint8).reshape(48, 64, 3), i, 1) for i in range(40)]
w = SegmentWriter(out, 64, 48, video.EncoderSettings(fps=25.0), StreamTarget(seg, wav, 0.0, 3.0))
w.__enter__()
for f in frames:  # 1.6 s of a 3 s chunk: the cut at 1 s has passed, the next segment is open
    w.write(f)
print(w._proc.pid, flush=True)
time.sleep(1.5)
os.kill(os.getpid(), signal.SIGKILL)  # a replica killed mid-chunk
"""


def test_a_killed_writer_takes_its_ffmpeg_along(tmp_path):
    """Left alone, ffmpeg would read end of input and close the open segment as if the chunk
    had ended — a short segment with a normal-looking line in segments.csv."""
    wav = _wav(tmp_path / "a.wav", 4.0)
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "seg"), str(wav),
                           str(tmp_path / "c.mp4")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    ffmpeg_pid = int(proc.stdout.split()[0])
    for _ in range(100):  # the kill is asynchronous: wait until ffmpeg has gone
        if not Path(f"/proc/{ffmpeg_pid}").exists() or "Z" in _proc_state(ffmpeg_pid):
            break
        time.sleep(0.05)
    else:
        pytest.fail("ffmpeg outlived the process that fed it")
    time.sleep(0.3)
    segs = read_segment_list(tmp_path / "seg")
    # only the segments closed at their cuts (0.52 s, 1 s), not the open one
    assert [s.name for s in segs] == ["seg_00000.ts", "seg_00001.ts"]
    assert not (tmp_path / "seg" / DONE).exists() and not (tmp_path / "c.mp4").exists()


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return "gone"


def test_streaming_refuses_b_frame_tunes_before_any_work():
    with pytest.raises(InputError, match="video.tune: zerolatency"):
        check_streamable(video.EncoderSettings(tune="film"))
    with pytest.raises(InputError, match="keyframe_s"):
        check_streamable(video.EncoderSettings(keyframe_s=0.01))
    check_streamable(video.EncoderSettings())


def test_a_segment_writer_refuses_b_frames_too(tmp_path):
    """The writer's own guard (for callers other than the pipeline): with B-frames the joined
    segments would decode to fewer frames than were rendered."""
    target = StreamTarget(str(tmp_path / "seg"), str(_wav(tmp_path / "a.wav", 1.0)), 0.0, 1.0)
    with pytest.raises(InputError, match="video.tune: zerolatency"):
        SegmentWriter(tmp_path / "c.mp4", 64, 48, video.EncoderSettings(tune="none"), target)
    assert not (tmp_path / "seg").exists()


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
def test_streamed_result_equals_plain(workbench, speech_wav, session_dir, strategy):
    out = session_dir / "stream" / strategy
    kw = dict(audio=speech_wav, strategy=strategy, progress=False)
    if strategy == "parallel":
        kw.update(models=["gan", "gan"], chunks=2)
    announced: list[Path] = []
    plain = workbench.generate(workbench.request(out / "plain.mp4", **kw))
    streamed = workbench.generate(workbench.request(out / "live.mp4", stream=True, hooks=Hooks(on_stream=announced.append), **kw))  # fmt: skip
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


def test_a_replica_killed_mid_stream_leaves_a_whole_playlist(workbench, speech_wav, session_dir):
    """Chunk 1's replica is SIGKILLed once its first segment is listed: the retry goes on in
    retry_1/, every URI ever listed still exists unchanged, and the result equals a plain run."""
    out = session_dir / "stream-kill"
    kw = dict(
        audio=speech_wav, strategy="parallel", models=["gan", "gan"], chunks=2, progress=False
    )
    pool = workbench.pool(["gan", "gan"])
    killed: list[int] = []
    served: dict[str, bytes] = {}  # what a player fetched while the job ran

    def kill_after_first_segment(pid: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for playlist in out.glob(".live.staging-*/live.files/stream/index.m3u8"):
                for uri in re.findall(r"^chunk_\S+\.ts$", playlist.read_text(), flags=re.M):
                    served.setdefault(uri, (playlist.parent / uri).read_bytes())
                if any(u.startswith("chunk_001/") for u in served):
                    killed.append(pid)
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def on_event(kind: str, data: dict) -> None:
        if kind == "started" and data["chunk"] == 1 and not killed:
            threading.Thread(target=kill_after_first_segment, args=(data["pid"],)).start()

    pool.on_event = on_event
    try:
        rec = workbench.generate(workbench.request(out / "live.mp4", stream=True, **kw))
    finally:
        pool.on_event = None
    assert killed and rec.chunks[1].attempts == 2
    final = out / "live.files" / "stream"
    uris = re.findall(r"^chunk_\S+\.ts$", (final / "index.m3u8").read_text(), flags=re.M)
    assert any(u.startswith("chunk_001/retry_1/") for u in uris)
    assert len(uris) == rec.stream.segments and all((final / u).is_file() for u in uris)
    assert all((final / u).read_bytes() == data for u, data in served.items())
    assert set(served) <= set(uris)
    assert sum(rec.stream.durations_s) == pytest.approx(rec.frames / 25, abs=0.2)
    workbench.generate(workbench.request(out / "plain.mp4", **kw))
    assert _max_diff(out / "plain.mp4", out / "live.mp4") <= 1


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


@pytest.mark.parametrize(("start_s", "expected"), [(0.0, [13, 12, 25, 10]), (1.4, [15, 25, 20])])
def test_segments_fall_on_the_whole_videos_seconds(tmp_path, start_s, expected):
    """A chunk starting at 1.4 s cuts at 2 s, 3 s … of the whole video, like a sequential run;
    the video's start also has a keyframe at 0.5 s (``video.first_segment_s``), so its first
    segment plays sooner."""
    wav = _wav(tmp_path / "a.wav", 5.0)
    target = StreamTarget(str(tmp_path / "seg"), str(wav), start_s=start_s, duration_s=2.4)
    with SegmentWriter(tmp_path / "c.mp4", 64, 48, ENC, target) as w:
        for f in _frames(60):
            w.write(f)
    segs = read_segment_list(tmp_path / "seg")
    assert [video.count_frames(tmp_path / "seg" / s.name)[0] for s in segs] == expected
