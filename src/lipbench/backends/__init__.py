"""Network backends: one interface to run the Wav2Lip network, several engines behind it.

``build(model, device, backend, precision, ...)`` turns the loaded generator into a
``Network`` that the Renderer calls with numpy arrays and that returns numpy arrays, so the
Renderer does not know which engine runs:

- ``torch``: torch eager, channels_last + BatchNorm folded (the reference's arithmetic up
  to float rounding); runs on CPU and CUDA.
- ``openvino``: OpenVINO's CPU plugin on a graph built op by op from the same folded
  weights; ``fp32`` with the precision hint f32, ``bf16`` via the bf16 precision hint. On
  a CPU without bf16 hardware OpenVINO ignores that hint and computes in f32:
  ``Network.effective_precision`` says what really ran.

``bf16`` differs by backend, each chosen so that a frame does not depend on its batch or
the thread count (parallel == sequential within one backend and precision): OpenVINO runs
the decoder in bf16 and keeps the face and audio encoders (a tenth of the work) in fp32
(49 dB vs fp32 on seeded weights, where the whole network in bf16 gives 39 dB); torch casts
the whole network (why: ``torch_eager``'s docstring).

``lipbench.tuning`` picks the backend and precision per host and thread count (cached);
``lipbench.backends.fidelity`` measures a network against plain fp32;
``lipbench.backends.measure`` gives the speed suite its rows.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InputError

VERSION = 2  # bump when a backend's arithmetic changes: calibration caches key on it
BACKENDS = ("torch", "openvino")
PRECISIONS = ("fp32", "bf16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


class Network(Protocol):
    """A built network. Inputs are float32 numpy: mel B×1×80×16, face B×6×96×96 in [0, 1].
    Outputs are float32 numpy B×3×96×96 in [0, 1]."""

    backend: str  # "torch" | "openvino"
    precision: str  # as asked: "fp32" | "bf16"
    effective_precision: str  # what the engine computes in
    device: str
    threads: int
    key: str  # backend, precision and layout options: names a fidelity measurement

    def encode_face(self, face: np.ndarray) -> Any:
        """The face encoder's features of ONE face (1×6×96×96), in the engine's own form."""

    def decode_static(self, mel: np.ndarray, feats: Any) -> np.ndarray:
        """A static avatar's per-frame work: audio encoder + decoder for B mel windows,
        with one face's features (from ``encode_face``) shared by all B."""

    def forward(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        """The whole network on B (mel, face) pairs."""

    def info(self) -> dict[str, Any]:
        """What this network is, for records: backend, precision, threads, engine facts."""


def to_faces(out: np.ndarray) -> np.ndarray:
    """Network output (B×3×96×96 in [0, 1]) → B×96×96×3 uint8: ×255 then truncate, as the
    reference does; the RGB-ordered planes are BGR here, as the input was."""
    return (np.asarray(out, dtype=np.float32).transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)


@functools.cache
def available() -> tuple[str, ...]:
    """Backends importable here (torch always; openvino when its wheel is installed)."""
    return tuple(b for b in BACKENDS if b == "torch" or importlib.util.find_spec(b) is not None)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16_hardware(flags: frozenset[str] | None = None) -> bool:
    """AMX-BF16 or AVX-512-BF16: without either, bf16 is emulated (slower than fp32)."""
    return bool(set(BF16_FLAGS) & (cpu_flags() if flags is None else flags))


def check_choice(backend: str, precision: str, device: str) -> None:
    """A concrete backend/precision must exist here and suit the device (one clear line)."""
    if backend not in BACKENDS:
        raise InputError(
            f"render.backend: unknown backend {backend!r}",
            f"use auto or one of {', '.join(BACKENDS)}",
        )
    if precision not in PRECISIONS:
        raise InputError(
            f"render.precision: unknown precision {precision!r}",
            f"use auto or one of {', '.join(PRECISIONS)}",
        )
    if backend not in available():
        raise InputError(
            f"render.backend {backend!r} is not installed here",
            "run `make setup` (it installs openvino), or set render.backend: torch",
        )
    if backend == "openvino" and not device.startswith("cpu"):
        raise InputError(
            f"render.backend openvino runs on the CPU only, not on {device}",
            "set render.backend: torch (or auto) for a GPU",
        )


def build(
    model: Any,  # lipbench.model.Wav2Lip, eval mode, fp32
    device: str = "cpu",
    backend: str = "torch",
    precision: str = "fp32",
    *,
    threads: int | None = None,
    channels_last: bool = True,
    fold_batchnorm: bool = True,
    pin_threads: bool = False,
) -> Network:
    """A ``Network`` for ``model``. ``threads`` defaults to torch's current thread count;
    ``pin_threads`` lets OpenVINO pin its threads to cores (off by default: two pinned
    1-thread replicas land on the same core, see docs in the tuning module)."""
    import torch

    check_choice(backend, precision, device)
    threads = threads or torch.get_num_threads()
    if backend == "openvino":
        from .openvino_cpu import OpenVINONetwork

        return OpenVINONetwork(model, precision, threads, pin_threads=pin_threads)
    from .torch_eager import TorchNetwork

    return TorchNetwork(model, device, precision, threads, channels_last, fold_batchnorm)


def describe(renderer: Any) -> dict[str, Any]:
    """Backend, precision and measured fidelity of a ``render.Renderer``, for run records:

    ``{"backend", "precision", "effective_precision", "exact", "threads", "batch_size",
    "fidelity": {"max_abs_px", "mean_abs_px", "psnr_db", "frames", "reference"} | None,
    "engine": {...}, "chosen_by": "calibration" | "config"}``"""
    net = renderer.network
    fid = renderer.fidelity
    return {
        "backend": net.backend,
        "precision": net.precision,
        "effective_precision": net.effective_precision,
        "exact": None if fid is None else bool(fid["exact"]),
        "threads": net.threads,
        "batch_size": int(renderer.options.batch_size),
        "fidelity": fid,
        "engine": net.info(),
        "chosen_by": "calibration" if renderer.calibration else "config",
    }
