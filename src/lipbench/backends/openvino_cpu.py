"""The OpenVINO backend: Wav2Lip on OpenVINO's CPU plugin (fp32, or its bf16 hint).

Precision: the face and audio encoders are compiled with the f32 hint always, the decoder
with the asked precision's hint. Rounding the encoders' weights to bf16 cost more fidelity
than all the rest: on a 2-core AMD EPYC with AVX-512-BF16 (seeded weights, static path)
the whole network in bf16 gave 39.3 dB / max 21 levels at 57 frames/s, decoder-only bf16
49.0 dB / max 6 levels at the same speed; its frames do not depend on the batch or the
thread count (tested), as OpenVINO's fp32 encoders don't either.

Threads: ``INFERENCE_NUM_THREADS`` = the replica's thread count, one stream, latency hint.
Pinning: OpenVINO pins its threads to cores by default; two 1-thread replicas started side
by side then both pin to the first core of their affinity mask and share it. Measured on a
2-core AMD EPYC (quiet, batch 16, whole network, 8 s): pinned and unbound 4.2 + 4.2 fps,
both on CPU 0; pinning off 7.0 + 6.8; each bound to its own core (``os.sched_setaffinity``)
6.6 + 6.6 pinned, 7.5 + 6.4 unpinned; one 2-thread replica 11.8. So pinning is off unless
asked for (``pin_threads``); a pool that binds each replica to its own cores may turn it on.

Importing this module does not import torch: a network built from graphs saved as IR
(``lipbench.backends.ov_cache``) runs without it; only ``OpenVINONetwork(model, ...)``,
which translates the torch module, needs torch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cachedir import cache_root

if TYPE_CHECKING:
    from ..model import Wav2Lip

GRAPHS = ("face", "audio", "decode")

_HINTS = {"fp32": "f32", "bf16": "bf16"}


@functools.cache
def _core() -> Any:
    """One Core per process. Compiled graphs are cached beside the calibration cache
    (OpenVINO keys them by graph, weights, config and its version): a warm start compiles
    in ≈ 0.14 s instead of ≈ 0.55 s (2-core EPYC, quiet)."""
    import openvino as ov

    core = ov.Core()
    blobs = cache_root() / "openvino"
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(blobs)})
    except (OSError, RuntimeError):  # a read-only home: compile every time, still correct
        pass
    return core


def _effective(compiled: Any) -> str:
    """The precision OpenVINO actually runs in (its hint, after it checked the CPU)."""
    t = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", …
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(t, t)


class OpenVINONetwork:
    backend = "openvino"
    device = "cpu"

    def __init__(
        self,
        model: Wav2Lip | None,
        precision: str,
        threads: int,
        *,
        pin_threads: bool = False,
        graphs: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Compile ``model``'s graphs (translated from torch), or ``graphs``: name → an
        ``openvino.Model`` or the path of a saved IR (``ov_cache``: no torch needed).
        ``config``: OpenVINO properties over ``compile_config``'s (the speed suite's
        variants: hints, streams)."""
        self.precision = precision
        self.threads = threads
        self.pin_threads = pin_threads
        self.config_overrides = dict(config or {})
        self.key = f"openvino|{precision}"
        if graphs is None:
            if model is None:
                raise ValueError("OpenVINONetwork needs a model or its graphs")
            from .ov_graph import build_graphs  # imports torch

            graphs = build_graphs(model)
        # the graphs compiled now, then dropped: the weights live once, in the compiled
        # models (≈ 1 s on 2 cores; ≈ 0.15 s from OpenVINO's cache)
        self._compiled: dict[str, Any] = {}
        self._requests: dict[str, Any] = {}
        for name in GRAPHS:
            graph = graphs[name]
            graph = str(graph) if isinstance(graph, Path) else graph
            compiled = _core().compile_model(graph, "CPU", self.compile_config(name))
            self._compiled[name] = compiled
            self._requests[name] = compiled.create_infer_request()
        self.effective_precision = _effective(self._compiled["decode"])

    def compile_config(self, name: str) -> dict[str, Any]:
        """OpenVINO's CPU configuration for graph ``name``: f32 encoders, the asked
        precision's hint for the decoder."""
        hint = _HINTS[self.precision] if name == "decode" else _HINTS["fp32"]
        return {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": self.pin_threads,
            "INFERENCE_PRECISION_HINT": hint,
            **self.config_overrides,
        }

    @property
    def compiled(self) -> dict[str, Any]:
        """The compiled models by graph name (``GRAPHS``): more infer requests for a caller
        that runs several at once (the speed suite's stream variants)."""
        return self._compiled

    def _run(self, name: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """One inference; not thread-safe (a Renderer calls its network from one thread)."""
        res = self._requests[name].infer([np.ascontiguousarray(x, np.float32) for x in inputs])
        return [np.array(res[o]) for o in self._compiled[name].outputs]

    def encode_face(self, face: np.ndarray) -> list[np.ndarray]:
        return self._run("face", [face])

    def decode_static(self, mel: np.ndarray, feats: list[np.ndarray]) -> np.ndarray:
        return self._run("decode", [*self._run("audio", [mel]), *feats])[0]

    def forward(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        return self.decode_static(mel, self._run("face", [face]))

    def info(self) -> dict[str, Any]:
        import openvino as ov

        return {
            "engine": f"openvino {ov.get_version()} CPU",
            "device": "cpu",
            "precision_hint": _HINTS[self.precision],
            "inference_precision": self.effective_precision,  # the decoder's
            "encoders_precision": _effective(self._compiled["face"]),
            "threads": self.threads,
            "cpu_pinning": self.pin_threads,
        }
