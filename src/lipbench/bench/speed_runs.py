"""One timed end-to-end run (WAV → MP4, sequential, in this process) and the peak-memory
check, for the speed suite (``lipbench.bench.speed_suite``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..chunk import LoadedRenderer, render_chunk
from ..inputs import build_inputs
from ..jobs import frame_label
from ..pipeline import Workbench
from ..render import MEL_STEP, JobInputs, mel_window_starts
from ..request import Settings
from ..stages import StageTimer
from ..video import mux_audio
from .speech import make_speech

Say = Callable[[str], None]


def network_frames(renderer: Any, job: JobInputs) -> int:
    """Frames the network really computes for ``job``: with a static avatar the default path
    renders each distinct mel window once (silence repeats), so end to end can deliver
    frames faster than the network alone computes them."""
    o = renderer.options
    if not (o.reuse_identical_mels and o.static_face_features and job.avatar.is_static):
        return job.n_frames
    starts = mel_window_starts(job.n_frames, job.mel.shape[1], job.fps)
    return len({job.mel[:, a : a + MEL_STEP].tobytes() for a in starts})


def end_to_end(cfg: dict[str, Any], wav: Path, loaded: LoadedRenderer, device: str, out: Path) -> dict[str, Any]:  # fmt: skip
    """WAV → MP4, sequential, in this process: mel, face (cached), render, paste, encode, mux."""
    threads = loaded.renderer.network.threads
    settings = Settings.from_config(cfg)
    build_inputs(
        settings.face, settings.fps, wav, None, StageTimer(), "warm"
    )  # fills the face cache: not timed
    t0 = time.perf_counter()
    # a fresh job key: a renderer reused across runs must not serve faces from its per-job cache
    job, _ = build_inputs(
        settings.face, settings.fps, wav, None, StageTimer(), f"{out}#{time.time_ns()}"
    )
    job.label = frame_label(loaded.weights.trained, cfg)
    video_only = out.with_name(out.stem + ".video.mp4")
    identity = dict(chunk=0, model="gan", replica=0, threads=threads, device=device)
    row, _ = render_chunk(loaded.renderer, job, 0, job.n_frames, video_only, settings.encoder, identity)  # fmt: skip
    mux_audio(video_only, wav, out, settings.ffmpeg, settings.audio_bitrate)
    wall = time.perf_counter() - t0
    video_only.unlink(missing_ok=True)
    return {"frames": job.n_frames, "wall_s": round(wall, 3), "fps": round(job.n_frames / wall, 3),
            "network_frames": network_frames(loaded.renderer, job), "render_s": row.render_s, "encode_wait_s": row.encode_s,
            "batch_size": loaded.renderer.options.batch_size, "trained": loaded.weights.trained}  # fmt: skip


def memory_check(cfg: dict[str, Any], out_dir: Path, say: Say, durations=(10.0, 60.0)) -> list[dict[str, Any]]:  # fmt: skip
    """Peak RSS of a replica process rendering each duration (frames are streamed, so it
    should not grow with the audio's length)."""
    speech = make_speech(list(durations), out_dir / "memory_speech", cfg)
    rows = []
    say("\nmemory: peak RSS of a fresh sequential replica per clip length")
    for d in durations:
        with Workbench(cfg) as wb:  # a fresh replica per length: its peak is this job's
            rec = wb.generate(wb.request(out_dir / f"memory_{d:g}s" / "result.mp4", audio=speech[d].wav,
                                         strategy="sequential", progress=False))  # fmt: skip
        peak = rec.chunks[0].peak_rss_mb
        rows.append({"kind": "memory", "option": f"sequential replica, {d:g} s", "peak_rss_mb": peak, "frames": rec.frames})  # fmt: skip
        say(f"  {d:>5g} s of audio, {rec.frames:>5} frames: peak RSS {peak:.0f} MB")
    return rows
