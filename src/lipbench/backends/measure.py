"""Frames/s and fidelity per backend × precision × thread count: rows for the speed suite."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from . import Network, available, build, has_bf16_hardware
from .fidelity import check, probe_inputs, reference


def batch_inputs(batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fidelity probe's inputs tiled to ``batch`` frames: (mel, faces, one face)."""
    mel, faces, face = probe_inputs(8)
    reps = -(-batch // len(mel))
    return np.tile(mel, (reps, 1, 1, 1))[:batch], np.tile(faces, (reps, 1, 1, 1))[:batch], face


def network_fps(network: Network, batch: int, seconds: float = 3.0, path: str = "full") -> float:
    """Frames/s of ``network`` on batches of ``batch`` after one warm-up batch. ``path``:
    ``full`` (B mels + B faces → B faces: a video avatar) or ``static`` (the face encoded
    once, then audio encoder + decoder per batch: a static avatar)."""
    mel, faces, face = batch_inputs(batch)
    if path == "full":
        step = lambda: network.forward(mel, faces)  # noqa: E731
    elif path == "static":
        feats = network.encode_face(face)
        step = lambda: network.decode_static(mel, feats)  # noqa: E731
    else:
        raise ValueError(f"path must be 'full' or 'static', got {path!r}")
    step()  # warm-up: first-call allocations, kernel selection
    n, t0 = 0, time.perf_counter()
    while True:
        step()  # every backend returns host numpy: the work is finished here
        n += batch
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


def measure(
    model: torch.nn.Module,
    *,
    backends: tuple[str, ...] | None = None,
    precisions: tuple[str, ...] | None = None,
    threads: tuple[int, ...] = (2, 1),
    batch: int = 16,
    seconds: float = 3.0,
    path: str = "full",
    device: str = "cpu",
    probe_frames: int = 8,
) -> list[dict[str, Any]]:
    """One row per backend × precision × thread count: frames/s (network only) and the
    fidelity vs plain fp32 on the same checkpoint. torch's thread count is restored after.

    ``precisions`` defaults to fp32, plus bf16 on a CPU with bf16 hardware (AMX or
    AVX-512-BF16). Elsewhere bf16 is emulated: torch eager ran it ~18× SLOWER than fp32 on
    a 2-core AMD EPYC (AVX2), and OpenVINO ignores its bf16 hint there and computes f32."""
    backends = backends or available()
    if precisions is None:
        precisions = ("fp32", "bf16") if has_bf16_hardware() or device != "cpu" else ("fp32",)
    probe = reference(model, device, n=probe_frames)
    before = torch.get_num_threads()
    rows = []
    try:
        for backend in backends:
            for precision in precisions:
                for t in threads:
                    torch.set_num_threads(t)
                    net = build(model, device, backend, precision, threads=t)
                    fid = check(net, probe)
                    fps = network_fps(net, batch, seconds, path)
                    rows.append({
                        "backend": backend, "precision": precision,
                        "effective_precision": net.effective_precision, "threads": t,
                        "batch": batch, "path": path, "fps": round(fps, 3),
                        **{k: fid[k] for k in ("max_abs_px", "mean_abs_px", "psnr_db", "exact", "passes_psnr")},
                    })  # fmt: skip
                    del net
    finally:
        torch.set_num_threads(before)
    return rows
