"""Video I/O through ffmpeg: encode raw frames to H.264, concat chunks with the concat demuxer
(stream copy), mux the audio once, count frames, read frames back. Outputs are atomic."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .errors import MediaError
from .ffmpeg import explain_failure, ffmpeg_exe, popen_ffmpeg_pipe, run_ffmpeg
from .keyframes import Keyframes


@dataclass(frozen=True)
class EncoderSettings:
    """Identical settings for every chunk, so the concat demuxer can stream-copy them."""

    fps: float = 25.0
    crf: int = 18
    preset: str = "veryfast"
    ffmpeg: str = "auto"
    # Keyframes (see ``keyframes.Keyframes``) every keyframe_s seconds of the whole video plus
    # one at first_segment_s, streamed or not: a streamed run's segments are cut there, and the
    # same GOPs everywhere keep a streamed result frame-equal to a plain one.
    keyframe_s: float = 1.0
    first_segment_s: float = 0.5
    # "zerolatency": x264 emits each frame as it arrives (no lookahead, no B-frames), so a
    # segment is ready as soon as its last frame is rendered (17 frames sooner, measured)
    tune: str = "zerolatency"

    @property
    def keyframes(self) -> Keyframes:
        return Keyframes(self.fps, self.keyframe_s, self.first_segment_s)

    def video_args(self, first_frame: int = 0) -> list[str]:
        """``first_frame``: where this piece starts in the whole video (its keyframes follow
        the whole video's, so a chunk's segments line up with a sequential run's)."""
        tune = [] if self.tune == "none" else ["-tune", self.tune]
        return [
            "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), *tune,
            "-force_key_frames", self.keyframes.ffmpeg_expr(first_frame),
            "-pix_fmt", "yuv420p",
            # yuv420p needs even sizes; crop one pixel off an odd edge rather than fail.
            "-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2",
            "-r", f"{self.fps:g}",
        ]  # fmt: skip

    def raw_input_args(self, width: int, height: int) -> list[str]:
        """ffmpeg's input options for BGR frames on stdin."""
        return ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
                "-r", f"{self.fps:g}", "-i", "pipe:0"]  # fmt: skip


class FrameWriter:
    """Streams BGR uint8 frames into ffmpeg's stdin → a video-only MP4, written atomically.

    Use as a context manager; the file appears at ``path`` only if every frame was written
    and ffmpeg exited cleanly."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, settings: EncoderSettings,
                 first_frame: int = 0):  # fmt: skip
        self.path = Path(path)
        self.first_frame = first_frame  # in the whole video
        self.size = (width, height)
        self.settings = settings
        self.frames_written = 0
        self._atomic = atomic_path(self.path)
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> FrameWriter:
        tmp = self._atomic.__enter__()
        w, h = self.size
        cmd = [
            ffmpeg_exe(self.settings.ffmpeg), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            *self.settings.raw_input_args(w, h), "-an", *self.settings.video_args(self.first_frame), "-movflags", "+faststart", str(tmp),
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
        except BrokenPipeError as exc:
            err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
            raise explain_failure(err, f"encoding {self.path}") from exc
        self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._proc is not None
        proc = self._proc
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()  # type: ignore[union-attr]
        if exc_type is not None:
            proc.kill()
            proc.wait()
            self._atomic.__exit__(exc_type, exc, tb)
            return False
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        rc = proc.wait()
        if rc != 0 or self.frames_written == 0:
            failure = (
                explain_failure(err, f"encoding {self.path}")
                if rc
                else MediaError(f"no frames written to {self.path}")
            )
            self._atomic.__exit__(MediaError, failure, None)
            raise failure
        self._atomic.__exit__(None, None, None)
        return False


def encode_frames(
    frames: Iterable[np.ndarray], path: str | os.PathLike, settings: EncoderSettings,
    first_frame: int = 0,
) -> int:  # fmt: skip
    """Encode an iterable of same-sized BGR frames (frame ``first_frame`` of a whole video
    onwards: its keyframes are the whole video's); returns the frame count."""
    it = iter(frames)
    first = next(it)
    with FrameWriter(path, first.shape[1], first.shape[0], settings, first_frame) as w:
        w.write(first)
        for f in it:
            w.write(f)
    return w.frames_written


def _concat_list_line(path: Path) -> str:
    # The concat demuxer's quoting: wrap in single quotes, escape embedded single quotes.
    return "file '" + str(path.resolve()).replace("'", "'\\''") + "'"


def concat_videos(chunks: list[Path], out: str | os.PathLike, ffmpeg: str = "auto") -> Path:
    """Join chunk videos (same encoder settings) with the concat demuxer and stream copy."""
    out = Path(out)
    list_file = out.with_name(f".{out.stem}.concat.txt")
    write_text_atomic(list_file, "\n".join(_concat_list_line(Path(c)) for c in chunks) + "\n")
    try:
        with atomic_path(out) as tmp:
            run_ffmpeg(["-f", "concat", "-safe", "0", "-i", list_file, "-c", "copy", "-movflags", "+faststart", tmp],
                       what=f"merging {len(chunks)} chunks into {out}", setting=ffmpeg)  # fmt: skip
    finally:
        list_file.unlink(missing_ok=True)
    return out


def mux_audio(video: str | os.PathLike, audio: str | os.PathLike, out: str | os.PathLike,
              ffmpeg: str = "auto", bitrate: str = "128k") -> Path:  # fmt: skip
    """Video stream copied, the whole audio encoded once as AAC (per-chunk AAC would add
    priming gaps at every seam)."""
    out = Path(out)
    with atomic_path(out) as tmp:
        run_ffmpeg(
            ["-i", video, "-i", audio, "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
             "-c:a", "aac", "-b:a", bitrate, "-movflags", "+faststart", tmp],
            what=f"adding audio to {out}", setting=ffmpeg,
        )  # fmt: skip
    return out


def merge_chunks(chunks: list[Path], audio: str | os.PathLike, out: str | os.PathLike,
                 ffmpeg: str = "auto", bitrate: str = "128k",
                 expect_frames: int | None = None, fps: float | None = None) -> Path:  # fmt: skip
    """Chunk videos → one MP4: concat (stream copy), then the whole audio muxed once. A
    single chunk is muxed directly. With ``expect_frames`` the result is verified (see
    ``verify_result``) before it appears under its name; a bad one is removed."""
    out = Path(out)
    staged = out.with_name(f".{out.stem}.unverified.mp4")
    merged = out.with_name(f".{out.stem}.video.mp4")
    try:
        if len(chunks) == 1:
            mux_audio(chunks[0], audio, staged, ffmpeg, bitrate)
        else:
            concat_videos(chunks, merged, ffmpeg)
            mux_audio(merged, audio, staged, ffmpeg, bitrate)
        if expect_frames is not None:
            verify_result(staged, expect_frames, fps or 25.0, audio_seconds(audio), ffmpeg)
        os.replace(staged, out)
    finally:
        merged.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
    return out


def audio_seconds(wav: str | os.PathLike) -> float:
    import soundfile as sf

    return float(sf.info(str(wav)).duration)


def stream_seconds(path: str | os.PathLike, stream: str, ffmpeg: str = "auto") -> float:
    """Duration of a file's first video ("v") or audio ("a") stream, by reading its packets."""
    proc = subprocess.run(
        [ffmpeg_exe(ffmpeg), "-hide_banner", "-nostdin", "-i", str(path), "-map", f"0:{stream}:0",
         "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    times = re.findall(r"time=(\d+):(\d+):(\d+(?:\.\d+)?)", proc.stderr)
    if proc.returncode != 0 or not times:
        raise explain_failure(proc.stderr, f"reading the {stream} stream of {path}")
    h, m, sec = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(sec)


def video_pts(path: str | os.PathLike, ffmpeg: str = "auto") -> list[float]:
    """Every video packet's presentation time in seconds, in presentation order: the
    packets are read (ffmpeg's framecrc), nothing is decoded, nothing rounded to 10 ms."""
    proc = subprocess.run(
        [ffmpeg_exe(ffmpeg), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0",
         "-c", "copy", "-f", "framecrc", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    tb = re.search(r"^#tb 0: (\d+)/(\d+)$", proc.stdout, flags=re.M)
    if proc.returncode != 0 or tb is None:
        raise explain_failure(proc.stderr, f"reading the video packets of {path}")
    unit = int(tb[1]) / int(tb[2])
    rows = [ln.split(",") for ln in proc.stdout.splitlines() if ln and not ln.startswith("#")]
    return sorted(int(r[2]) * unit for r in rows)


def verify_result(path: str | os.PathLike, frames: int, fps: float, audio_s: float,
                  ffmpeg: str = "auto") -> None:  # fmt: skip
    """A final MP4 must decode to exactly ``frames`` frames and carry audio as long as the
    WAV it was made from (within one frame); otherwise MediaError and nothing is published."""
    decoded, _ = count_frames(path)
    if decoded != frames:
        raise MediaError(
            f"the merged video has {decoded} frames, the plan has {frames} (a chunk is truncated or missing)",
            "re-render the chunks (the workflow: delete results/<job>/chunks and re-run)",
        )
    # A timestamp gap makes players repeat a frame: every step between frames must be one.
    pts = video_pts(path, ffmpeg)
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    if steps and not 0.5 / fps < min(steps) <= max(steps) < 1.5 / fps:
        raise MediaError(
            f"the merged video's frames are {min(steps):.4f}–{max(steps):.4f} s apart, not {1 / fps:.4f} s (a timestamp gap between chunks)",
            "re-render the chunks with identical encoder settings",
        )
    got_audio = stream_seconds(path, "a", ffmpeg)
    if abs(got_audio - audio_s) > 1.0 / fps + 0.05:  # AAC frames are 64 ms at 16 kHz
        raise MediaError(
            f"the merged video's audio lasts {got_audio:.3f} s, the WAV {audio_s:.3f} s",
            "re-run the convert step for this audio",
        )


@dataclass
class MediaInfo:
    duration_s: float | None
    has_video: bool
    has_audio: bool
    width: int | None
    height: int | None
    fps: float | None


def probe(path: str | os.PathLike, ffmpeg: str = "auto") -> MediaInfo:
    """Stream facts from ffmpeg's own banner (imageio-ffmpeg ships no ffprobe)."""
    proc = subprocess.run([ffmpeg_exe(ffmpeg), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    err = proc.stderr
    if "Input #0" not in err:
        raise explain_failure(err, f"reading {path}")
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", err)
    duration = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else None
    vid = re.search(r"Stream #.*Video: .*?, (\d+)x(\d+)", err)
    fps = re.search(r"(\d+(?:\.\d+)?) fps", err)
    return MediaInfo(
        duration_s=duration,
        has_video=vid is not None,
        has_audio=re.search(r"Stream #.*Audio:", err) is not None,
        width=int(vid[1]) if vid else None,
        height=int(vid[2]) if vid else None,
        fps=float(fps[1]) if fps else None,
    )


def count_frames(path: str | os.PathLike) -> tuple[int, float]:
    """(frames, seconds) by decoding the file."""
    import imageio_ffmpeg

    return imageio_ffmpeg.count_frames_and_secs(str(path))


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video to BGR uint8 frames."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="bgr24")
    meta = next(gen)
    w, h = meta["size"]
    for buf in gen:
        yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
