"""What every chunk of a job renders from: the full-file mel (computed once) and the avatar
with its tracked face (detected once on the frames the audio uses, cached on disk)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from . import audio as audio_mod
from .face import FaceSettings, detect_faces, load_avatar
from .plan import frame_count
from .record import StageTimer
from .render import JobInputs


def face_settings(face: FaceSettings | dict[str, Any]) -> FaceSettings:
    """A FaceSettings from itself or from a config's ``face`` section (unknown keys are
    the schema's business, not ours: only FaceSettings' fields are taken)."""
    if isinstance(face, FaceSettings):
        return face
    names = {f.name for f in fields(FaceSettings)}
    return FaceSettings(**{k: v for k, v in face.items() if k in names})


def build_inputs(
    face: FaceSettings | dict[str, Any],
    fps: float | Path,
    wav: Path | str | None,
    avatar: str | None,
    timer: StageTimer | str,
    job_id: str | None = None,
) -> tuple[JobInputs, np.ndarray]:
    """Full-file mel (computed once) and the avatar's tracked face for the frames the audio
    uses (detections cached on disk); also the samples, for the planner. Stages timed:
    ``detect`` (loading the avatar, detection, tracking) and ``mel``.

    ``build_inputs(face: FaceSettings, fps, wav, avatar, timer, job_id)``. The old form
    ``build_inputs(cfg, wav, avatar, timer, job_id)`` (a whole config dict first) still works
    while its callers move over."""
    if isinstance(face, dict) and "face" in face:  # old form: (cfg, wav, avatar, timer, job_id)
        cfg = face
        return build_inputs(
            face_settings(cfg["face"]),
            float(cfg["fps"]),
            fps,
            wav,
            avatar,
            str(timer),  # type: ignore[arg-type]
        )
    settings = face_settings(face)
    assert isinstance(timer, StageTimer) and wav is not None and job_id is not None
    fps = float(fps)  # type: ignore[arg-type]
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
