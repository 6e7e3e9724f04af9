"""A finished HLS stream as a player reads it: the segments of all chunks, in playlist order,
form one MPEG-TS stream (continuity counters go on from segment to segment, a new encode is
flagged), ffmpeg's HLS reader decodes it without a single warning, and the #EXTINF lengths
add up to the video's (no AAC priming in them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lipbench import video
from lipbench.ffmpeg import ffmpeg_exe
from lipbench.stream.playlist import StreamPublisher
from lipbench.stream.segments import SegmentWriter, StreamTarget

FPS = 25.0
ENC = video.EncoderSettings(fps=FPS)
CHUNK_FRAMES = [60, 50]  # 2.4 s + 2.0 s: the second chunk starts between two whole seconds
TS_PACKET = 188


def _stream(root: Path) -> Path:
    """Two chunks streamed as the pool does (one writer each, one publisher), rendered one
    after the other; returns the closed playlist."""
    t = np.arange(int(16000 * 5.0)) / 16000
    sf.write(root / "a.wav", (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    base = np.random.default_rng(7).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    targets, first = [], 0
    for i, n in enumerate(CHUNK_FRAMES):
        seg_dir = str(root / "stream" / f"chunk_{i:03d}")
        targets.append(StreamTarget(seg_dir, str(root / "a.wav"), first / FPS, n / FPS))
        first += n
    publisher = StreamPublisher(root / "stream", targets, ENC).start()
    first = 0
    for i, (target, n) in enumerate(zip(targets, CHUNK_FRAMES, strict=True)):
        with SegmentWriter(root / f"chunk_{i}.mp4", 64, 48, ENC, target) as w:
            for k in range(n):
                w.write(np.roll(base, first + k, axis=1))
        first += n
    publisher.close(finished=True)
    return publisher.playlist


@pytest.fixture(scope="module")
def playlist(tmp_path_factory) -> Path:
    return _stream(tmp_path_factory.mktemp("hls"))


def _entries(playlist: Path) -> list[tuple[float, str, bool]]:
    """(#EXTINF length, URI, after a discontinuity) in play order."""
    out, length, disc = [], None, False
    for line in playlist.read_text().splitlines():
        if line == "#EXT-X-DISCONTINUITY":
            disc = True
        elif m := re.fullmatch(r"#EXTINF:([0-9.]+),", line):
            length = float(m.group(1))
        elif line and not line.startswith("#"):
            assert length is not None
            out.append((length, line, disc))
            length, disc = None, False
    return out


def test_a_finished_playlist_decodes_without_a_warning(playlist):
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "warning",
         "-i", str(playlist), "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0
    assert proc.stderr == ""  # was: "Packet corrupt" at every join, DTS out of order per chunk


def test_extinf_lengths_add_up_to_the_video(playlist):
    entries = _entries(playlist)
    assert playlist.read_text().rstrip().endswith("#EXT-X-ENDLIST")
    assert sum(length for length, _, _ in entries) == pytest.approx(
        sum(CHUNK_FRAMES) / FPS, abs=2e-3
    )
    # each chunk's first segment: its frames only (was 0.584 and 0.664: the AAC priming added)
    firsts = [length for length, uri, _ in entries if uri.endswith("seg_00000.ts")]
    assert firsts == pytest.approx([13 / FPS, 15 / FPS], abs=1e-3)
    for length, uri, _ in entries:  # and every length is its segment's frames
        frames, _secs = video.count_frames(playlist.parent / uri)
        assert length == pytest.approx(frames / FPS, abs=1e-3), uri


def _ts_packets(data: bytes) -> list[tuple[int, int, bool, bool]]:
    """(pid, continuity counter, has payload, discontinuity indicator) of each packet."""
    assert len(data) % TS_PACKET == 0
    out = []
    for i in range(0, len(data), TS_PACKET):
        p = data[i : i + TS_PACKET]
        assert p[0] == 0x47, "lost MPEG-TS sync"
        pid = ((p[1] & 0x1F) << 8) | p[2]
        afc = (p[3] >> 4) & 3
        disc = afc in (2, 3) and p[4] > 0 and bool(p[5] & 0x80)
        out.append((pid, p[3] & 0x0F, afc in (1, 3), disc))
    return out


def test_continuity_counters_go_on_across_segments(playlist):
    """Within a chunk the counters continue from one segment to the next; where a chunk (a
    new encode, after #EXT-X-DISCONTINUITY) starts, its first packet of each stream says so."""
    entries = _entries(playlist)
    last: dict[int, int] = {}
    flagged_at: list[str] = []
    for _, uri, new_chunk in entries:
        for pid, cc, payload, disc in _ts_packets((playlist.parent / uri).read_bytes()):
            if pid == 0x1FFF:  # null packets carry no counter
                continue
            if disc:
                flagged_at.append(uri)
            elif pid in last:
                expected = (last[pid] + 1) % 16 if payload else last[pid]
                assert cc == expected, f"{uri}: pid {pid:#x} counter {cc}, expected {expected}"
            last[pid] = cc
        assert not new_chunk or uri in flagged_at, f"{uri} starts a chunk but is not flagged"
    chunk_starts = {uri for _, uri, _ in entries if uri.endswith("seg_00000.ts")}
    assert set(flagged_at) <= chunk_starts
