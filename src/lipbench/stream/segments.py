"""The replica side of streaming: a chunk's frames → MPEG-TS segments with the chunk's share
of the audio, cut at the encoder's keyframes (``EncoderSettings.keyframe_s``), each listed in
``segments.csv`` by ffmpeg as it closes. All chunks' segments, in play order, form one
MPEG-TS stream: timestamps on the whole video's timeline, continuity counters that go on from
segment to segment (flagged where a chunk's new encode starts), and AAC packets that tile (each
chunk keeps its share of one whole-audio encode: ``audio_packets``). Each attempt at a chunk writes into a folder of its
own (a retry never touches segments a player may already have), and marks it ``done`` once
ffmpeg has closed the last segment. The segments' video is then joined by stream copy into
the chunk's video-only MP4, so the final MP4 is made from the segments that streamed (after a
retry, the retry's: the same frames, as rendering is deterministic — a test checks it on CPU)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..audio import SAMPLE_RATE
from ..errors import InputError, MediaError
from ..ffmpeg import explain_failure, ffmpeg_exe, popen_ffmpeg_pipe, run_ffmpeg
from ..video import EncoderSettings

SEGMENT_LIST = "segments.csv"
SEGMENT_PATTERN = "seg_%05d.ts"
DONE = "done"  # in an attempt's folder: ffmpeg closed its last segment cleanly
RETRY_PREFIX = "retry_"  # a retried chunk's attempts: <chunk folder>/retry_1, retry_2, ...
# every segment URI a playlist can list, relative to the stream folder (the server's filter)
SEGMENT_URI = r"chunk_\d{3}/(?:retry_\d+/)?seg_\d{5}\.ts"
# ffmpeg's AAC encoder starts with 1024 samples of priming. Every segment's timestamps are the
# WHOLE video's time plus this lead (so that the priming packet of the video's start sits at
# 0), in every chunk: the chunks' segments play as one continuous timeline.
AUDIO_LEAD_S = 1024 / SAMPLE_RATE


@dataclass(frozen=True)
class StreamTarget:
    """Where one chunk streams to, and which slice of the job's audio it carries."""

    seg_dir: str
    audio: str  # the job's 16 kHz WAV
    start_s: float  # the chunk's first frame / fps
    duration_s: float  # its frames / fps
    audio_bitrate: str = "128k"

    @property
    def origin_s(self) -> float:
        """Where the chunk's first frame sits on its segments' timeline."""
        return self.start_s + AUDIO_LEAD_S


@dataclass(frozen=True)
class Segment:
    name: str  # file name inside the chunk's folder
    start_s: float  # chunk-relative, as ffmpeg listed it
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def read_segment_list(seg_dir: str | os.PathLike, origin_s: float = AUDIO_LEAD_S) -> list[Segment]:
    """The segments ffmpeg has closed so far (a line still being written is skipped), in the
    chunk's own video time: ffmpeg lists stream times, which run ``origin_s`` (the chunk's
    start + ``AUDIO_LEAD_S``: ``StreamTarget.origin_s``) ahead. The first segment starts at
    the chunk's first frame, so its length leaves the audio priming out."""
    path = Path(seg_dir) / SEGMENT_LIST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    done = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        name, start, end = line.strip().rsplit(",", 2)
        done.append(Segment(name, max(0.0, float(start) - origin_s), float(end) - origin_s))
    return done


def check_streamable(enc: EncoderSettings) -> None:
    """Refuse, before any work, encoder settings whose segments cannot rebuild the video."""
    if enc.tune != "zerolatency":
        raise InputError(
            f"streaming needs video.tune: zerolatency (tune {enc.tune} lets x264 use B-frames, whose reordered frames the segment join loses)",
            "set video.tune: zerolatency, or run without streaming",
        )
    if enc.keyframe_s * enc.fps < 1:
        raise InputError(
            f"streaming needs video.keyframe_s of at least one frame (got {enc.keyframe_s} s at {enc.fps:g} fps)",
            "set video.keyframe_s: 1.0",
        )


def new_attempt(seg_dir: Path) -> Path:
    """The folder for a fresh attempt at a chunk: the chunk's own, else the next retry_N."""
    if not seg_dir.exists():
        seg_dir.mkdir(parents=True)
        return seg_dir
    n = 1
    while (seg_dir / f"{RETRY_PREFIX}{n}").exists():
        n += 1
    (seg_dir / f"{RETRY_PREFIX}{n}").mkdir()
    return seg_dir / f"{RETRY_PREFIX}{n}"


def latest_attempt(seg_dir: Path) -> Path | None:
    """The folder of the newest attempt at a chunk (None before the first one)."""
    if not seg_dir.is_dir():
        return None
    retries = [int(p.name[len(RETRY_PREFIX) :]) for p in seg_dir.glob(f"{RETRY_PREFIX}*")]
    return seg_dir / f"{RETRY_PREFIX}{max(retries)}" if retries else seg_dir


def frame_span(settings: EncoderSettings, target: StreamTarget) -> tuple[int, int]:
    """(the chunk's first frame in the whole video, its frame count)."""
    return round(target.start_s * settings.fps), round(target.duration_s * settings.fps)


def keyframe_times(settings: EncoderSettings, target: StreamTarget) -> list[float]:
    """Chunk-relative times of the chunk's keyframes after its first: where its segments
    are cut (``keyframes.Keyframes``, the rule the encoder follows)."""
    bounds = settings.keyframes.bounds(*frame_span(settings, target))
    return [b / settings.fps for b in bounds[1:-1]]


def ends_at_cut(segment: Segment, index: int, keyframes: list[float], fps: float) -> bool:
    """Did ffmpeg close segment ``index`` at its keyframe cut (not early, at an end of input)?"""
    if index >= len(keyframes):
        return False  # the chunk's last segment: complete only once its attempt is done
    expected = keyframes[index]
    return abs(segment.end_s - expected) <= 0.5 / fps


class SegmentWriter:
    """Same interface as ``video.FrameWriter``: BGR frames in; segments out as they close;
    ``video_path`` (video-only MP4 from the segments) appears only after a clean end."""

    def __init__(self, video_path: str | os.PathLike, width: int, height: int,
                 settings: EncoderSettings, target: StreamTarget):  # fmt: skip
        self.path = Path(video_path)
        self.size = (width, height)
        self.settings = settings
        self.target = target
        check_streamable(settings)
        self.keyframes = keyframe_times(settings, target)
        self.seg_dir = Path(target.seg_dir)  # this attempt's folder, set on entry
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> SegmentWriter:
        self.seg_dir = new_attempt(Path(self.target.seg_dir))
        s, t = self.settings, self.target
        w, h = self.size
        cmd = [
            ffmpeg_exe(s.ffmpeg), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            *s.raw_input_args(w, h),
            # the whole audio, its time shifted to the chunk's (``audio_packets`` keeps a share)
            "-itsoffset", f"{-t.start_s:.6f}", "-i", t.audio,
            "-map", "0:v:0", "-map", "1:a:0", *s.video_args(frame_span(s, t)[0]),
            "-c:a", "aac", "-b:a", t.audio_bitrate, "-bsf:a", audio_packets(t),
            # the audio is read at once, the video arrives at the render's pace
            "-max_muxing_queue_size", "8192",
            # the whole video's timeline in every chunk: no timestamp jump where chunks join
            "-output_ts_offset", f"{t.origin_s:.6f}", "-avoid_negative_ts", "disabled",
            "-f", "segment", *cut_args(s.fps, self.keyframes),
            # one MPEG-TS muxer for all the chunk's segments: its continuity counters go on
            # from segment to segment; the chunk's first packets carry the discontinuity flag
            # (a new encode starts there, as the playlist's #EXT-X-DISCONTINUITY says)
            "-segment_format", "mpegts", "-individual_header_trailer", "0",
            "-segment_format_options", "mpegts_flags=+initial_discontinuity",
            "-segment_list", str(self.seg_dir / SEGMENT_LIST), "-segment_list_type", "csv",
            str(self.seg_dir / SEGMENT_PATTERN),
        ]  # fmt: skip
        self._proc = popen_ffmpeg_pipe(cmd)
        return self

    def write(self, frame: np.ndarray) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if frame.shape[1::-1] != self.size or frame.dtype != np.uint8:
            raise ValueError(
                f"frame {frame.shape} {frame.dtype} does not match writer size {self.size}"
            )
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
            self._proc.stdin.flush()  # a segment is cut only once its frames reach ffmpeg
        except BrokenPipeError as exc:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise explain_failure(err, f"streaming {self.path}") from exc
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._proc is not None
        proc = self._proc
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()  # type: ignore[union-attr]
        if exc_type is not None:
            proc.kill()
            proc.wait()
            return False
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise explain_failure(err, f"streaming {self.path}")
        segments = read_segment_list(self.seg_dir, self.target.origin_s)
        cut = [
            ends_at_cut(seg, i, self.keyframes, self.settings.fps) for i, seg in enumerate(segments)
        ]
        if (
            self.frames_written == 0
            or len(segments) != len(self.keyframes) + 1
            or not all(cut[:-1])
        ):
            raise MediaError(
                f"streaming {self.path}: ffmpeg's {len(segments)} segments do not end at the chunk's {len(self.keyframes)} keyframe cuts",
                "report this with the chunk's fps, keyframe_s and start; run without --stream meanwhile",
            )
        (self.seg_dir / DONE).touch()
        join_segments([self.seg_dir / s.name for s in segments], self.path, self.settings.ffmpeg)
        return False


def cut_args(fps: float, keyframes: list[float]) -> list[str]:
    """ffmpeg's cut times: half a frame before each keyframe, so rounding never skips one
    (the segment muxer compares them before ``-output_ts_offset``: chunk-relative)."""
    cuts = [f"{t - 0.5 / fps:.6f}" for t in keyframes]
    return ["-segment_times", ",".join(cuts)] if cuts else ["-segment_time", "86400"]


def join_segments(segments: list[Path], out: Path, ffmpeg: str = "auto") -> Path:
    """One chunk's segments → its video-only MP4 by stream copy. The segments are pieces of
    one MPEG-TS stream, so their bytes join; the video's timestamps are shifted to start at
    0 (they run on the whole video's timeline), as in a plain chunk."""
    joined = out.with_name(f".{out.stem}.joined.ts")
    try:
        with open(joined, "wb") as dst:
            for seg in segments:
                with open(seg, "rb") as src:
                    shutil.copyfileobj(src, dst)
        with atomic_path(out) as tmp:
            run_ffmpeg(["-i", joined, "-map", "0:v:0", "-c", "copy", "-bsf:v", "setts=ts=TS-STARTPTS",
                        "-movflags", "+faststart", tmp],
                       what=f"joining the segments of {out}", setting=ffmpeg)  # fmt: skip
    finally:
        joined.unlink(missing_ok=True)
    return out


def audio_packets(target: StreamTarget) -> str:
    """The bitstream filter that keeps this chunk's share of the AAC packets of the WHOLE
    audio. Every chunk encodes the whole WAV (deterministic: the same packets everywhere) and
    keeps the packets whose first sample, after the encoder's priming, falls in its frames —
    so the chunks' audio tiles with no priming or padding between them and decodes across a
    join as one stream. Times are chunk-relative (the audio input is offset by -start_s); the
    bounds sit half a sample off the packet grid, so rounding never moves a packet."""
    half = 0.5 / SAMPLE_RATE
    keep = [f"gte(pts*tb\\,{-AUDIO_LEAD_S - half:.9f})"] if target.start_s > 0 else []
    keep.append(f"lt(pts*tb\\,{target.duration_s - AUDIO_LEAD_S - half:.9f})")
    return f"noise=drop=not({'*'.join(keep)})"
