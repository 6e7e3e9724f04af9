"""How far a network's generated faces are from plain fp32 torch on the same checkpoint.

The check runs a few real batches: the default avatar's face (scikit-image's astronaut,
shipped in the wheel) cropped at slightly different boxes, and speech-like mel windows
(seeded, smooth in time, louder in the low bands, in Wav2Lip's [-4, 4] range). One batch
goes through the whole network (a video avatar's path), one through the static-avatar path
(face encoded once). Faces are compared after the ×255 → uint8 truncation the pipeline
applies: ``max_abs_px`` ≤ 1 is "exact" (float rounding can tip one value across a level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..metrics import psnr
from . import Network, to_faces

EXACT_MAX_PX = 1  # exact: at most one level of 255 from plain fp32
MIN_PSNR_DB = 40.0  # an inexact (bf16) path must reach this on the generated faces
REFERENCE = "torch fp32 NCHW, BatchNorm unfolded (the reference's arithmetic)"
# the astronaut's face as the Haar detector finds it (x 177, y 66, 95×95) with the default
# 10 px chin pad: fixed, so the check needs no detector
_BOX = (177, 66, 272, 171)


@dataclass
class Probe:
    """Inputs of the check and plain fp32's outputs on them."""

    mel: np.ndarray  # n×1×80×16
    faces: np.ndarray  # n×6×96×96, one crop per frame
    face: np.ndarray  # 1×6×96×96, the static avatar's face
    full: np.ndarray  # plain fp32 outputs, whole network
    static: np.ndarray  # plain fp32 outputs, static path


def probe_inputs(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mel n×1×80×16, faces n×6×96×96, face 1×6×96×96), float32, deterministic."""
    from skimage import data as skdata

    from ..face import crop_face, face_input

    rng = np.random.default_rng(seed)
    frame = np.ascontiguousarray(skdata.astronaut()[:, :, ::-1])  # BGR, as avatars are
    x1, y1, x2, y2 = _BOX
    jitter = rng.integers(-4, 5, size=(n, 4))
    faces = np.stack(
        [face_input(crop_face(frame, (x1 + a, y1 + b, x2 + c, y2 + d))) for a, b, c, d in jitter]
    )
    face = face_input(crop_face(frame, _BOX))[None]
    # speech-like: a spectral tilt (low bands loud) plus noise smoothed along time
    tilt = np.linspace(1.0, -2.5, 80)[:, None]
    noise = rng.normal(0, 1.2, size=(n, 80, 16 + 4))
    smooth = np.stack([noise[:, :, k : k + 16] for k in range(5)]).mean(0) * 2
    mel = np.clip(tilt + smooth, -4, 4).astype(np.float32)[:, None]
    return mel, faces.astype(np.float32), face.astype(np.float32)


@torch.inference_mode()
def reference(model: torch.nn.Module, device: str = "cpu", n: int = 8) -> Probe:
    """Plain fp32 outputs of ``model`` (as loaded: NCHW, BatchNorm not folded)."""
    mel, faces, face = probe_inputs(n)
    p = next(model.parameters())
    m = model.eval()
    if p.dtype != torch.float32:
        raise ValueError("the fidelity reference needs the fp32 model")

    def run(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (
            m(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)).float().cpu().numpy()
        )

    return Probe(mel, faces, face, run(mel, faces), run(mel, np.repeat(face, n, axis=0)))


def compare(out: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Level differences of the generated faces (uint8, as the pipeline makes them)."""
    a, b = to_faces(out).astype(np.int16), to_faces(ref).astype(np.int16)
    d = np.abs(a - b)
    db = psnr(a, b)
    return {
        "max_abs_px": int(d.max()),
        "mean_abs_px": round(float(d.mean()), 5),
        "psnr_db": None if db == float("inf") else round(float(db), 2),  # None: identical
    }


def check(network: Network, probe: Probe) -> dict[str, Any]:
    """The network on the probe vs plain fp32: worst of the whole-network and static paths.
    ``exact``: max ≤ 1 level; ``passes_psnr``: PSNR ≥ 40 dB (None = identical counts)."""
    full = compare(network.forward(probe.mel, probe.faces), probe.full)
    static = compare(
        network.decode_static(probe.mel, network.encode_face(probe.face)), probe.static
    )
    dbs = [r["psnr_db"] for r in (full, static) if r["psnr_db"] is not None]
    worst_db = min(dbs) if dbs else None
    return {
        "max_abs_px": max(full["max_abs_px"], static["max_abs_px"]),
        "mean_abs_px": max(full["mean_abs_px"], static["mean_abs_px"]),
        "psnr_db": worst_db,
        "exact": max(full["max_abs_px"], static["max_abs_px"]) <= EXACT_MAX_PX,
        "passes_psnr": bool(worst_db is None or worst_db >= MIN_PSNR_DB),
        "frames": 2 * len(probe.mel),
        "vs": REFERENCE,
        "network": network.key,
        "effective_precision": network.effective_precision,
    }
