"""OpenVINO's own options, each measured on this host (issue 27 item 3): the performance
hint, streams, batch size and static shapes, network only, at the replica's threads. Every
variant's frames are compared with the default's on the same batch (max level difference:
the options change scheduling, not arithmetic, so they stay exact)."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import numpy as np

from ..backends import has_bf16_hardware, to_faces
from ..backends.measure import batch_inputs, cpu_s
from ..backends.openvino_cpu import OpenVINONetwork
from ..backends.ov_graph import FEATURE_SHAPES, build_graphs
from .contamination import watch
from .speed_common import Suite, busy


@dataclasses.dataclass(frozen=True)
class OVVariant:
    name: str
    batch: int
    hint: str = "LATENCY"
    streams: int = 1
    workers: int = 1  # Python threads, each with its own infer requests (OpenVINO drops the GIL)
    static_shapes: bool = False


def variants(batch: int) -> list[OVVariant]:
    """The default (latency hint, 1 stream, dynamic batch) at three batch sizes, static
    shapes at ``batch``, and 2 streams fed by 2 threads under the throughput hint."""
    sizes = sorted({8, batch, 32})
    return [
        OVVariant(f"latency, 1 stream, batch {b}{' (default)' if b == batch else ''}", b)
        for b in sizes
    ] + [  # fmt: skip
        OVVariant(f"latency, 1 stream, static shapes, batch {batch}", batch, static_shapes=True),
        OVVariant(f"throughput, 2 streams × 2 threads, batch {batch}", batch, "THROUGHPUT", 2, 2),
    ]


def _static_graphs(model: Any, batch: int, path: str) -> dict[str, Any]:
    """The three graphs with every input's batch fixed (a static avatar: one face)."""
    graphs = build_graphs(model)
    faces = 1 if path == "static" else batch
    graphs["face"].reshape({"face": [faces, 6, 96, 96]})
    graphs["audio"].reshape({"mel": [batch, 1, 80, 16]})
    shapes = {"emb": [batch, 512, 1, 1]}
    shapes |= {f"feat{i}": [faces, c, s, s] for i, (c, s) in enumerate(FEATURE_SHAPES)}
    graphs["decode"].reshape(shapes)
    return graphs


def _infer(compiled: Any, request: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    res = request.infer([np.ascontiguousarray(x, np.float32) for x in inputs])
    return [np.array(res[o]) for o in compiled.outputs]


def _rate(net: OpenVINONetwork, v: OVVariant, path: str, seconds: float) -> tuple[float, float, np.ndarray]:  # fmt: skip
    """(frames/s, CPU ms per frame, the first batch's output) with ``v.workers`` threads."""
    mel, faces, face = batch_inputs(v.batch)
    c = net.compiled
    reqs = [{g: c[g].create_infer_request() for g in c} for _ in range(v.workers)]

    def step(r: dict[str, Any]) -> np.ndarray:
        feats = _infer(c["face"], r["face"], [face if path == "static" else faces])
        emb = _infer(c["audio"], r["audio"], [mel])
        return _infer(c["decode"], r["decode"], [*emb, *feats])[0]

    first = step(reqs[0])  # warm-up, and the output compared
    for r in reqs[1:]:
        step(r)
    counts = [0] * v.workers
    t0, c0 = time.perf_counter(), cpu_s()

    def work(i: int) -> None:
        while True:  # at least one batch each, however late the thread starts
            step(reqs[i])
            counts[i] += v.batch
            if time.perf_counter() - t0 >= seconds:
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(v.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    n = sum(counts)
    return n / (time.perf_counter() - t0), 1000 * (cpu_s() - c0) / max(n, 1), first


def openvino_rows(s: Suite, model: Any, batch: int, path: str) -> list[dict[str, Any]]:
    """Each variant × precision (fp32; bf16 where it is native) at the replica's threads."""
    precisions = ["fp32"] + (["bf16"] if has_bf16_hardware() else [])
    s.say(f"\nOpenVINO options, network only, {path} path, {s.threads} threads "
          f"(max px: vs the default variant's frames on the same batch)")  # fmt: skip
    s.say(f"{'variant':<46} {'precision':>9} {'frames/s':>9} {'CPU ms/frame':>13} {'max px':>7} {'others %':>9}")  # fmt: skip
    rows = []
    for precision in precisions:
        default: dict[int, np.ndarray] = {}
        for v in variants(batch):
            graphs = _static_graphs(model, v.batch, path) if v.static_shapes else None
            config = {"PERFORMANCE_HINT": v.hint, "NUM_STREAMS": v.streams}
            net = OpenVINONetwork(model, precision, s.threads, graphs=graphs, config=config)
            with watch() as r:
                fps, cpu_ms, out = _rate(net, v, path, s.opts.variant_seconds)
            del net
            ref = default.setdefault(v.batch, out)
            px = int(np.abs(to_faces(out).astype(int) - to_faces(ref).astype(int)).max())
            row = s.add({"kind": "openvino_option", "option": v.name, "backend": "openvino",
                         "precision": precision, "threads": s.threads, "batch": v.batch,
                         "hint": v.hint, "streams": v.streams, "workers": v.workers,
                         "static_shapes": v.static_shapes, "path": path, "fps": round(fps, 3),
                         "cpu_ms_per_frame": round(cpu_ms, 3), "max_abs_px_vs_default": px,
                         "exact": px <= 1}, r.value)  # fmt: skip
            rows.append(row)
            s.say(f"{v.name:<46} {precision:>9} {fps:>9.2f} {cpu_ms:>13.2f} {px:>7} {row['others_pct']:>9}{busy(row)}")  # fmt: skip
    return rows
