"""The replica side of streaming: a chunk's frames → MPEG-TS segments with the chunk's slice
of the audio, cut at the encoder's keyframes (``EncoderSettings.keyframe_s``), each listed in
``segments.csv`` by ffmpeg as it closes. On a clean end the segments' video is joined by
stream copy into the chunk's video-only MP4, so the merge — and so the final MP4 — is made
from exactly the frames that were streamed."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import MediaError
from ..ffmpeg import explain_failure, ffmpeg_exe, run_ffmpeg
from ..video import EncoderSettings

SEGMENT_LIST = "segments.csv"
SEGMENT_PATTERN = "seg_%05d.ts"


@dataclass(frozen=True)
class StreamTarget:
    """Where one chunk streams to, and which slice of the job's audio it carries."""

    seg_dir: str
    audio: str  # the job's 16 kHz WAV
    start_s: float  # the chunk's first frame / fps
    duration_s: float  # its frames / fps
    audio_bitrate: str = "128k"


@dataclass(frozen=True)
class Segment:
    name: str  # file name inside the chunk's folder
    start_s: float  # chunk-relative, as ffmpeg listed it
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def read_segment_list(seg_dir: str | os.PathLike) -> list[Segment]:
    """The segments ffmpeg has closed so far (a line still being written is skipped)."""
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
        done.append(Segment(name, float(start), float(end)))
    return done


class SegmentWriter:
    """Same interface as ``video.FrameWriter``: BGR frames in; segments out as they close;
    ``video_path`` (video-only MP4 from the segments) appears only after a clean end."""

    def __init__(self, video_path: str | os.PathLike, width: int, height: int,
                 settings: EncoderSettings, target: StreamTarget):  # fmt: skip
        self.path = Path(video_path)
        self.size = (width, height)
        self.settings = settings
        self.target = target
        self.seg_dir = Path(target.seg_dir)
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> SegmentWriter:
        if self.seg_dir.exists():  # a retried chunk starts its segments afresh
            shutil.rmtree(self.seg_dir)
        self.seg_dir.mkdir(parents=True)
        s, t = self.settings, self.target
        w, h = self.size
        cmd = [
            ffmpeg_exe(s.ffmpeg), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            *s.raw_input_args(w, h),
            "-ss", f"{t.start_s:.6f}", "-t", f"{t.duration_s:.6f}", "-i", t.audio,
            "-map", "0:v:0", "-map", "1:a:0", *s.video_args(t.start_s),
            "-c:a", "aac", "-b:a", t.audio_bitrate,
            # the audio is read at once, the video arrives at the render's pace
            "-max_muxing_queue_size", "8192",
            "-f", "segment", *cut_args(s, t), "-segment_format", "mpegts",
            "-segment_list", str(self.seg_dir / SEGMENT_LIST), "-segment_list_type", "csv",
            str(self.seg_dir / SEGMENT_PATTERN),
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
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
        segments = read_segment_list(self.seg_dir)
        if self.frames_written == 0 or not segments:
            raise MediaError(f"no segments written for {self.path}")
        join_segments([self.seg_dir / s.name for s in segments], self.path, self.settings.ffmpeg)
        return False


def cut_args(settings: EncoderSettings, target: StreamTarget) -> list[str]:
    """Cut where the whole video's keyframe slots fall inside this chunk (see
    ``EncoderSettings.video_args``): half a frame early, so rounding never skips a keyframe."""
    k, start = settings.keyframe_s, target.start_s
    slot = math.floor(start / k + 1e-9) + 1
    cuts = []
    while slot * k - start < target.duration_s - 0.5 / settings.fps:
        cuts.append(f"{slot * k - start - 0.5 / settings.fps:.6f}")
        slot += 1
    return ["-segment_times", ",".join(cuts)] if cuts else ["-segment_time", "86400"]


def join_segments(segments: list[Path], out: Path, ffmpeg: str = "auto") -> Path:
    """One chunk's segments → its video-only MP4 by stream copy. The segments are pieces of
    one MPEG-TS stream, so their bytes join; the video's timestamps are shifted to start at
    0 (the AAC priming put them 64 ms late), as in a plain chunk."""
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
