"""The speed suite's measurements of single stages: the machine's compute ceilings (matmul,
a large convolution), frames/s of the torch forward pass for each exact layout option with
its pixel error against plain fp32, and the two stages after the network — paste-back and
H.264 encode — timed alone on real rendered faces."""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..metrics import psnr
from ..model import FLOPS_PER_FRAME, Wav2Lip, fold_batchnorm
from ..video import EncoderSettings, FrameWriter

STATIC_GFLOP = FLOPS_PER_FRAME["audio_encoder"] + FLOPS_PER_FRAME["decoder"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(threads: int, n: int = 2048, seconds: float = 2.0, device: str = "cpu") -> float:
    """Sustained float32 matmul rate: the practical compute ceiling of this machine."""
    torch.set_num_threads(threads)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def conv_gflops(
    threads: int, seconds: float = 2.0, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> float:
    """Sustained rate of one large 3×3 convolution through torch's own conv kernels (oneDNN
    on CPU) — a second ceiling: where the BLAS matmul is not the fastest code on the machine
    (e.g. MKL's generic path on an AMD CPU), the conv kernels can outrun it. ``dtype``
    bfloat16 gives the ceiling of a bf16 path (meaningful only with bf16 hardware)."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(256, 256, 3, 1, 1, bias=False).to(device, dtype).eval()
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(16, 256, 24, 24, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    flop = 2 * 256 * 256 * 9 * 24 * 24 * 16
    with torch.inference_mode():
        for _ in range(2):
            conv(x)
        _sync(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conv(x)
            reps += 1
            _sync(device)
    return flop * reps / (time.perf_counter() - t0) / 1e9


@dataclasses.dataclass
class Variant:
    name: str
    channels_last: bool
    fold: bool
    static: bool
    exact: bool = True


# torch eager, fp32: what each exact option buys (the backends' rows take it from there)
VARIANTS = [
    Variant("plain fp32 NCHW", False, False, False),
    Variant("channels_last", True, False, False),
    Variant("channels_last + folded BN", True, True, False),
    Variant("+ static face features (default)", True, True, True),
]


def prepare(model: Wav2Lip, v: Variant) -> Wav2Lip:
    m = fold_batchnorm(model) if v.fold else model
    return m.to(memory_format=torch.channels_last) if v.channels_last else m


def _inputs(batch: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 1, 80, 16, generator=g) * 8 - 4
    face = torch.rand(1, 6, 96, 96, generator=g)
    return mel.to(device), face.to(device)


def _forward(m: Wav2Lip, v: Variant, mel: torch.Tensor, face: torch.Tensor, feats=None) -> torch.Tensor:  # fmt: skip
    fmt = torch.channels_last if v.channels_last else torch.contiguous_format
    mel = mel.contiguous(memory_format=fmt)
    if v.static:
        feats = feats if feats is not None else m.encode_face(face.contiguous(memory_format=fmt))
        return m.decode(
            m.encode_audio(mel), [f.expand(len(mel), -1, -1, -1) for f in feats]
        )  # expand: a no-op on features already batched
    return m(mel, face.expand(len(mel), -1, -1, -1).contiguous(memory_format=fmt))


@torch.inference_mode()
def network_fps(
    model: Wav2Lip, v: Variant, batch: int, seconds: float, device: str = "cpu"
) -> tuple[float, torch.Tensor, float]:
    """Frames/s of one torch option after a warm-up batch, that batch's output (on the
    CPU) for the pixel comparison, and the CPU ms per frame the process spent."""
    from ..backends.measure import cpu_s

    m = prepare(model.to(device), v)
    mel, face = _inputs(batch, device)
    feats = None
    if v.static:
        fmt = torch.channels_last if v.channels_last else torch.contiguous_format
        # once per job and batch size, materialised contiguous, as the torch backend does
        feats = [
            f.expand(batch, -1, -1, -1).contiguous(memory_format=fmt)
            for f in m.encode_face(face.contiguous(memory_format=fmt))
        ]
    out = _forward(m, v, mel, face, feats).float().cpu()  # warm-up; also compared
    frames, t0, c0 = 0, time.perf_counter(), cpu_s()
    while time.perf_counter() - t0 < seconds:
        _forward(m, v, mel, face, feats)
        _sync(device)
        frames += batch
    return frames / (time.perf_counter() - t0), out, 1000 * (cpu_s() - c0) / frames


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


# --- the stages after the network, each alone ------------------------------------------


def paste_fps(job: Any, faces: np.ndarray, seconds: float = 1.0) -> float:
    """Frames/s of the paste-back alone, as ``render.Renderer.render`` does it per frame:
    the 96×96 face resized into the avatar frame's box (a fresh frame), plus the label.
    Single-threaded: its CPU ms per frame is 1000 / this."""
    from ..face import paste_face
    from ..render import stamp_label

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        frame = paste_face(job.frame(n), job.boxes.box(n), faces[n % len(faces)],
                           alpha=job.boxes.alpha(n), blend=job.blend)  # fmt: skip
        if job.label:
            stamp_label(frame, job.label)
        n += 1
    return n / (time.perf_counter() - t0)


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def encode_fps(frames: list[np.ndarray], settings: EncoderSettings, out: Path, seconds: float = 2.0) -> tuple[float, float]:  # fmt: skip
    """The H.264 encode alone: ``frames`` (cycled) piped into ffmpeg as ``FrameWriter`` does,
    timed until ffmpeg has written the file. Returns (frames/s, ffmpeg's CPU ms per frame):
    on a machine the network keeps busy, the CPU an encode takes is what it costs."""
    h, w = frames[0].shape[:2]
    n, cpu0, t0 = 0, _children_cpu_s(), time.perf_counter()
    try:
        with FrameWriter(out, w, h, settings) as writer:
            while n < len(frames) or time.perf_counter() - t0 < seconds:
                writer.write(frames[n % len(frames)])
                n += 1
        fps = n / (time.perf_counter() - t0)
        return fps, 1000 * (_children_cpu_s() - cpu0) / n  # ffmpeg was waited for: counted
    finally:
        with contextlib.suppress(OSError):
            out.unlink()


def encoder_variants(base: EncoderSettings) -> list[tuple[str, EncoderSettings]]:
    """The configured encoder, and what it is compared with: x264 without a tune (before
    every encode took ``-tune zerolatency`` for streaming) and the next faster presets."""
    out = [("configured", base)]
    if base.tune != "none":
        out.append(("tune none", dataclasses.replace(base, tune="none")))
    for preset in ("superfast", "ultrafast"):
        if base.preset != preset:
            out.append((f"preset {preset}", dataclasses.replace(base, preset=preset)))
    return out
