"""Frames/s and fidelity per backend × precision × thread count: rows for the speed suite."""

from __future__ import annotations

import resource
import time
from typing import Any

import numpy as np
import torch

from . import Network, available, build, has_bf16_hardware
from .fidelity import Probe, check, probe_inputs, reference

ROW_FIDELITY = ("max_abs_px", "mean_abs_px", "psnr_db", "exact", "passes_psnr")


def batch_inputs(batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fidelity probe's inputs tiled to ``batch`` frames: (mel, faces, one face)."""
    mel, faces, face = probe_inputs(8)
    reps = -(-batch // len(mel))
    return np.tile(mel, (reps, 1, 1, 1))[:batch], np.tile(faces, (reps, 1, 1, 1))[:batch], face


def cpu_s() -> float:
    """CPU seconds this process used so far, all its threads (OpenVINO's and torch's too)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def network_rate(
    network: Network, batch: int, seconds: float = 3.0, path: str = "full"
) -> tuple[float, float]:
    """(frames/s, CPU ms per frame) of ``network`` on batches of ``batch`` after one warm-up
    batch. ``path``: ``full`` (B mels + B faces → B faces: a video avatar) or ``static``
    (the face encoded once, then audio encoder + decoder per batch: a static avatar). The
    CPU figure is what the network costs the machine, whatever else runs meanwhile."""
    mel, faces, face = batch_inputs(batch)
    if path == "full":
        step = lambda: network.forward(mel, faces)  # noqa: E731
    elif path == "static":
        feats = network.encode_face(face)
        step = lambda: network.decode_static(mel, feats)  # noqa: E731
    else:
        raise ValueError(f"path must be 'full' or 'static', got {path!r}")
    step()  # warm-up: first-call allocations, kernel selection
    n, t0, c0 = 0, time.perf_counter(), cpu_s()
    while True:
        step()  # every backend returns host numpy: the work is finished here
        n += batch
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0), 1000 * (cpu_s() - c0) / n


def network_fps(network: Network, batch: int, seconds: float = 3.0, path: str = "full") -> float:
    """Frames/s of ``network`` (``network_rate``'s first figure)."""
    return network_rate(network, batch, seconds, path)[0]


def choices(device: str = "cpu") -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(backend, precision) pairs worth measuring on ``device`` here, and the pairs left out
    with the reason: (backend, precision, why)."""
    measured, skipped = [], []
    bf16_ok = has_bf16_hardware() or device != "cpu"
    for backend in ("torch", "openvino"):
        for precision in ("fp32", "bf16"):
            if backend not in available():
                skipped.append((backend, precision, "not installed"))
            elif backend == "openvino" and device != "cpu":
                skipped.append((backend, precision, f"OpenVINO runs on the CPU only, not {device}"))
            elif precision == "bf16" and not bf16_ok:
                why = (
                    "no bf16 hardware (AMX / AVX-512-BF16): torch emulates it (~18× slower than fp32)"
                    if backend == "torch"
                    else "no bf16 hardware: OpenVINO ignores the bf16 hint and computes fp32"
                )
                skipped.append((backend, precision, why))
            else:
                measured.append((backend, precision))
    return measured, skipped


def measure_one(
    model: torch.nn.Module,
    backend: str,
    precision: str,
    threads: int,
    probe: Probe,
    *,
    batch: int = 16,
    seconds: float = 3.0,
    path: str = "full",
    device: str = "cpu",
) -> dict[str, Any]:
    """One row: frames/s of one network (network only) and its fidelity vs plain fp32 on the
    same checkpoint (``probe`` from ``fidelity.reference``). Sets torch's thread count."""
    torch.set_num_threads(threads)
    net = build(model, device, backend, precision, threads=threads)
    fid = check(net, probe)
    fps, cpu_ms = network_rate(net, batch, seconds, path)
    return {
        "backend": backend, "precision": precision,
        "effective_precision": net.effective_precision, "threads": threads,
        "batch": batch, "path": path, "fps": round(fps, 3), "cpu_ms_per_frame": round(cpu_ms, 3),
        **{k: fid[k] for k in ROW_FIDELITY},
    }  # fmt: skip


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

    ``precisions`` defaults to the pairs of ``choices(device)``: fp32, plus bf16 on a CPU with bf16 hardware
    (AMX or AVX-512-BF16) or a GPU. Elsewhere bf16 is emulated: torch eager ran it ~18×
    SLOWER than fp32 on a 2-core AMD EPYC (AVX2), and OpenVINO ignores its bf16 hint there
    and computes f32."""
    if precisions is None:
        pairs = choices(device)[0]
    else:  # as asked, even an emulated bf16
        pairs = [(b, p) for b in available() for p in precisions if b == "torch" or device == "cpu"]
    pairs = [(b, p) for b, p in pairs if backends is None or b in backends]
    probe = reference(model, device, n=probe_frames)
    before = torch.get_num_threads()
    try:
        return [
            measure_one(
                model, b, p, t, probe, batch=batch, seconds=seconds, path=path, device=device
            )
            for b, p in pairs
            for t in threads
        ]
    finally:
        torch.set_num_threads(before)
