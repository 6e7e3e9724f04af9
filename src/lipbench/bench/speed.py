"""The speed suite's measurements of the network alone: the machine's compute ceilings
(matmul, a large convolution) and frames/s of the Wav2Lip forward pass for each speed option,
with each option's pixel error against plain fp32."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from ..metrics import psnr
from ..model import FLOPS_PER_FRAME, Wav2Lip, fold_batchnorm

STATIC_GFLOP = FLOPS_PER_FRAME["audio_encoder"] + FLOPS_PER_FRAME["decoder"]


def matmul_gflops(threads: int, n: int = 2048, seconds: float = 2.0, device: str = "cpu") -> float:
    """Sustained float32 matmul rate: the practical compute ceiling of this machine."""
    torch.set_num_threads(threads)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def conv_gflops(threads: int, seconds: float = 2.0, device: str = "cpu") -> float:
    """Sustained rate of one large 3×3 convolution through torch's own conv kernels (oneDNN
    on CPU) — a second ceiling: where the BLAS matmul is not the fastest code on the machine
    (e.g. MKL's generic path on an AMD CPU), the conv kernels can outrun it."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(256, 256, 3, 1, 1, bias=False).to(device).eval()
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(16, 256, 24, 24, device=device).contiguous(memory_format=torch.channels_last)
    flop = 2 * 256 * 256 * 9 * 24 * 24 * 16
    with torch.inference_mode():
        for _ in range(2):
            conv(x)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conv(x)
            reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return flop * reps / (time.perf_counter() - t0) / 1e9


@dataclasses.dataclass
class Variant:
    name: str
    channels_last: bool
    fold: bool
    static: bool
    autocast: torch.dtype | None = None
    exact: bool = True


VARIANTS = [
    Variant("plain fp32 NCHW", False, False, False),
    Variant("channels_last", True, False, False),
    Variant("channels_last + folded BN", True, True, False),
    Variant("+ static face features (default)", True, True, True),
]
OPT_IN = [Variant("bf16 autocast (opt-in, inexact)", True, True, True, torch.bfloat16, exact=False)]


def prepare(model: Wav2Lip, v: Variant) -> Wav2Lip:
    m = fold_batchnorm(model) if v.fold else model
    return m.to(memory_format=torch.channels_last) if v.channels_last else m


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=g) * 8 - 4
    face = torch.rand(1, 6, 96, 96, generator=g)
    return mel, face


def _forward(
    m: Wav2Lip, v: Variant, mel: torch.Tensor, face: torch.Tensor, feats=None
) -> torch.Tensor:
    fmt = torch.channels_last if v.channels_last else torch.contiguous_format
    mel = mel.contiguous(memory_format=fmt)
    ctx = (
        torch.autocast("cpu", dtype=v.autocast)
        if v.autocast
        else torch.autocast("cpu", enabled=False)
    )
    with ctx:
        if v.static:
            feats = (
                feats if feats is not None else m.encode_face(face.contiguous(memory_format=fmt))
            )
            return m.decode(
                m.encode_audio(mel),
                [f.expand(len(mel), -1, -1, -1) for f in feats],  # no-op if batched
            ).float()
        faces = face.expand(len(mel), -1, -1, -1).contiguous(memory_format=fmt)
        return m(mel, faces).float()


@torch.inference_mode()
def network_fps(
    model: Wav2Lip, v: Variant, batch: int, seconds: float
) -> tuple[float, torch.Tensor]:
    m = prepare(model, v)
    mel, face = _inputs(batch)
    feats = None
    if v.static:
        fmt = torch.channels_last if v.channels_last else torch.contiguous_format
        # once per job and batch size, materialised contiguous, as render.Renderer does
        feats = [
            f.expand(batch, -1, -1, -1).contiguous(memory_format=fmt)
            for f in m.encode_face(face.contiguous(memory_format=fmt))
        ]
    out = _forward(m, v, mel, face, feats)  # warm-up; also the output compared for exactness
    frames, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _forward(m, v, mel, face, feats)
        frames += batch
    return frames / (time.perf_counter() - t0), out


def pixel_error(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Errors after the ×255 → uint8 truncation the pipeline applies."""
    ua = (a.numpy() * 255).astype(np.uint8)
    ub = (b.numpy() * 255).astype(np.uint8)
    d = np.abs(ua.astype(np.int16) - ub.astype(np.int16))
    return {
        "max_abs_px": int(d.max()),
        "mean_abs_px": round(float(d.mean()), 4),
        "psnr_db": round(psnr(ua, ub), 2),
    }
