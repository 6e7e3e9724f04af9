"""What every chunk of a job renders from: the full-file mel (computed once) and the avatar
with its tracked face (detected once on the frames the audio uses, cached on disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import audio as audio_mod
from .face import FaceSettings, detect_faces, load_avatar
from .plan import frame_count
from .render import JobInputs
from .stages import StageTimer


def build_inputs(
    face: FaceSettings,
    fps: float,
    wav: Path | str,
    avatar: str | None,
    timer: StageTimer,
    job_id: str,
) -> tuple[JobInputs, np.ndarray]:
    """Full-file mel (computed once) and the avatar's tracked face for the frames the audio
    uses (detections cached on disk); also the samples, for the planner. Stages timed:
    ``detect`` (loading the avatar, detection, tracking) and ``mel``."""
    settings = face
    with timer.stage("detect"):  # a bad avatar file fails before any audio work
        av = load_avatar(avatar or settings.avatar, max_side=settings.max_side)
    with timer.stage("mel"):
        samples = audio_mod.read_wav(Path(wav))
        mel = audio_mod.melspectrogram(samples)
    n = frame_count(len(samples), fps)  # detection looks only at the frames these show
    with timer.stage("detect"):
        boxes = detect_faces(
            av, settings.detector, settings.pads, settings.smooth_frames, settings.cache_path,
            n_out=n, fps=fps, loop=settings.loop, select=settings.select, fade_s=settings.fade_s,
        )  # fmt: skip
    inputs = JobInputs(mel=mel, n_frames=n, fps=fps, avatar=av, boxes=boxes,
                       meta={"key": job_id}, blend=settings.blend)  # fmt: skip
    return inputs, samples
