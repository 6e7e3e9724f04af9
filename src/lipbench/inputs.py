"""What every chunk of a job renders from: the full-file mel (computed once) and the avatar
with its face boxes (detected once, cached on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import audio as audio_mod
from .face import detect_faces, load_avatar
from .plan import frame_count
from .record import StageTimer
from .render import JobInputs


def build_inputs(
    cfg: dict[str, Any], wav: Path, avatar: str | None, timer: StageTimer, job_id: str
) -> tuple[JobInputs, np.ndarray]:
    """Full-file mel (computed once) and the avatar's face boxes (cached on disk); also the
    samples, for the planner."""
    f = cfg["face"]
    with timer.stage("detect"):
        av = load_avatar(avatar or f["avatar"], max_side=f["max_side"])
        boxes = detect_faces(
            av, f["detector"], tuple(f["pads"]), f["smooth_frames"], f["cache_dir"]
        )
    with timer.stage("split"):
        samples = audio_mod.read_wav(wav)
        mel = audio_mod.melspectrogram(samples)
    n = frame_count(len(samples), float(cfg["fps"]))
    inputs = JobInputs(mel=mel, n_frames=n, fps=float(cfg["fps"]), avatar=av, boxes=boxes,
                       meta={"key": job_id})  # fmt: skip
    return inputs, samples
