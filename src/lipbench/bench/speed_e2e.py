"""The speed suite's pipeline steps: each stage after the network alone (paste-back, H.264
encode, and input preparation timed with a null network), then end to end per path — the
plain path, every backend × precision, and a **null-network row** (the network replaced by
returning its input face: the pipeline's own ceiling) — each with the rate its stages' CPU
cost predicts on this host's cores (``speed_predict``) and the measured rate as a % of it."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.measure import cpu_s
from ..chunk import LoadedRenderer, load_renderer
from ..render import JobInputs, RenderOptions
from ..request import Settings
from .contamination import watch
from .speed import encode_fps, encoder_variants, paste_fps
from .speed_common import Suite, busy, replica_spec
from .speed_predict import GOAL_PCT_PREDICTED, StageCost, describe, network_stage, predict
from .speed_runs import end_to_end

NULL_ROW = "null network (pipeline ceiling)"
PLAIN_ROW = "plain path (before #8)"


class NullNetwork:
    """A ``backends.Network`` that returns its input face (the unmasked reference half):
    everything around the network still runs, the network costs nothing."""

    backend = "null"
    precision = effective_precision = "fp32"
    device = "cpu"
    key = "null"

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def encode_face(self, face: np.ndarray) -> np.ndarray:
        return face

    def decode_static(self, mel: np.ndarray, feats: np.ndarray) -> np.ndarray:
        return np.repeat(feats[:, 3:], len(mel), axis=0)

    def forward(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        return face[:, 3:]

    def info(self) -> dict[str, Any]:
        return {"engine": "null (returns its input face)", "threads": self.threads}


def renderer_for(s: Suite, row: dict[str, Any], batch: int) -> LoadedRenderer:
    opts = dataclasses.replace(Settings.from_config(s.cfg).render_options(), backend=row["backend"],
                               precision=row["precision"], batch_size=batch)  # fmt: skip
    return load_renderer(replica_spec(s.cfg, "gan", s.threads, s.device, opts))


def prep_ms(renderer: Any, job: JobInputs, frames: int, seconds: float = 0.0) -> float:
    """CPU ms per frame of everything ``generated_faces`` does besides the network (mel
    windows, face crops, batch assembly, repeats, the uint8 conversion), each pass on a
    fresh copy of ``job`` so no cache of the renderer's helps; passes repeat for at least
    ``seconds`` (a timer's tick is 10 ms: a lone short pass reads coarsely)."""
    net = renderer.network
    renderer.network = NullNetwork(net.threads)
    n, done = min(frames, job.n_frames), 0
    try:
        c0, t0 = cpu_s(), time.perf_counter()
        while done == 0 or time.perf_counter() - t0 < seconds:
            fresh = dataclasses.replace(job, meta={**job.meta, "key": f"prep#{time.time_ns()}"})
            for _ in renderer.generated_faces(fresh, 0, n):
                pass
            done += n
        return 1000 * (cpu_s() - c0) / done
    finally:
        renderer.network = net


def stages(s: Suite, loaded: LoadedRenderer, job: JobInputs, net_row: dict[str, Any], name: str) -> dict[str, float]:  # fmt: skip
    """Paste-back and H.264 encode alone, on frames this renderer really makes (each given
    the whole machine): frames/s and CPU ms per frame."""
    n = min(job.n_frames, 2 * int(loaded.renderer.options.batch_size))
    faces = [f for _, batch in loaded.renderer.generated_faces(job, 0, n) for f in batch]
    frames = list(loaded.renderer.render(job, 0, n))
    w, h = job.avatar.size
    net_fps = net_row["fps"]
    s.say(
        f"\nstages alone, {w}×{h} avatar (each given the whole machine){'frames/s':>27} {'CPU ms/frame':>13}"
    )
    s.say(f"  {'network only, ' + name:<78} {net_fps:>9.2f}")
    with watch() as r:
        p = paste_fps(job, faces, s.opts.stage_seconds)
    row = s.add({"kind": "stage", "option": "paste-back", "fps": round(p, 2), "cpu_ms_per_frame": round(1000 / p, 3), "exact": True}, r.value)  # fmt: skip
    s.say(f"  {'paste-back (resize 96² → box, paste' + (', label)' if job.label else ')'):<78} {p:>9.2f} {1000 / p:>13.2f}   others {row['others_pct']} %{busy(row)}")  # fmt: skip
    rates = {"network": net_fps, "paste": p, "paste_cpu_ms": 1000 / p}
    for label, enc in encoder_variants(Settings.from_config(s.cfg).encoder):
        with watch() as r:
            e, cpu_ms = encode_fps(
                frames, enc, s.opts.out / ".encode_probe.mp4", s.opts.stage_seconds
            )
        desc = f"H.264 encode, {label}: x264 {enc.preset}, crf {enc.crf}, tune {enc.tune}, keyframe {enc.keyframe_s:g} s"
        row = s.add({"kind": "stage", "option": desc, "fps": round(e, 2), "cpu_ms_per_frame": round(cpu_ms, 3), "exact": True}, r.value)  # fmt: skip
        s.say(f"  {desc:<78} {e:>9.2f} {cpu_ms:>13.2f}   others {row['others_pct']} %{busy(row)}")
        if "encode" not in rates:
            rates["encode"], rates["encode_cpu_ms"] = e, cpu_ms
    with watch() as r:
        prep = prep_ms(loaded.renderer, job, 4 * int(loaded.renderer.options.batch_size), s.opts.stage_seconds)  # fmt: skip
    row = s.add({"kind": "stage", "option": "input preparation (null network)", "fps": round(1000 / prep, 2), "cpu_ms_per_frame": round(prep, 3), "exact": True}, r.value)  # fmt: skip
    s.say(f"  {'input preparation: mel windows, crops, batches, uint8 (null network)':<78} {1000 / prep:>9.2f} {prep:>13.2f}   others {row['others_pct']} %{busy(row)}")  # fmt: skip
    rates["prep_cpu_ms"] = prep
    pred = predict(pipeline_stages(rates, net_fps, net_row.get("cpu_ms_per_frame")), os.cpu_count() or 1)  # fmt: skip
    rates["predicted"] = pred.fps
    slowest = min(("network", "paste", "encode"), key=rates.__getitem__)
    s.say(f"  slowest stage alone: {slowest}; predicted end to end from the CPU each stage takes on "
          f"{os.cpu_count()} cores: {describe(pred)}")  # fmt: skip
    return rates


def pipeline_stages(rates: dict[str, float], net_fps: float | None = None, net_cpu_ms: float | None = None,
                    share: float = 1.0, prep: float | None = None) -> list[StageCost]:  # fmt: skip
    """The stages of one end-to-end row: the network (left out for the null row), input
    preparation, paste-back and the configured encode."""
    out = []
    if net_fps is not None and net_cpu_ms is not None:
        out.append(network_stage(net_cpu_ms, net_fps, share))
    p = rates["prep_cpu_ms"] if prep is None else prep
    out += [
        StageCost("prep", p, 1000 / p if p > 0 else float("inf")),
        StageCost("paste", rates["paste_cpu_ms"], rates["paste"]),
        StageCost("encode", rates["encode_cpu_ms"], rates["encode"]),
    ]
    return out


def end_to_end_rows(s: Suite, wav: Path, batch: int, paths: list[dict[str, Any]], rates: dict[str, float],
                    plain_net: dict[str, Any], null_from: dict[str, Any]) -> dict[str, float]:  # fmt: skip
    """WAV → MP4, sequential, at the replica's threads: the plain path, each backend ×
    precision in ``paths`` (network-only rows), then the null network in ``null_from``'s
    renderer. Each row: measured frames/s, % of its network-only rate, and % of the rate
    its stages' CPU cost predicts on this host's cores (``plain_net``: the plain path's
    network-only row)."""
    cores = os.cpu_count() or 1
    s.say(f"\nend to end, WAV → MP4, sequential, {s.threads} threads, {s.opts.seconds:g} s of speech ({wav.name}); "
          f"predicted = what the stages' CPU cost allows on {cores} cores (goal ≥ {GOAL_PCT_PREDICTED:g} %)")  # fmt: skip
    plain = replica_spec(s.cfg, "gan", s.threads, s.device, RenderOptions.plain())
    runs: list[tuple[str, dict[str, Any] | None, Any]] = [(PLAIN_ROW, plain_net, lambda: load_renderer(plain))]  # fmt: skip
    runs += [(f"{r['backend']} {r['precision']}", r, lambda r=r: renderer_for(s, r, batch)) for r in paths]  # fmt: skip
    runs.append((NULL_ROW, None, lambda: renderer_for(s, null_from, batch)))
    fps = {}
    for name, net_row, load in runs:
        loaded = load()
        if name == NULL_ROW:
            loaded.renderer.network = NullNetwork(s.threads)
        out = s.opts.out / f"speed_{name.split(' (')[0].replace(' ', '_')}.mp4"
        prep = prep_ms(loaded.renderer, _job_for(s, wav, loaded), 4 * batch, 0.3)
        with watch() as r:
            res = end_to_end(s.cfg, wav, loaded, s.device, out)
        del loaded
        fps[name] = res["fps"]
        share = max(1, res["network_frames"]) / res["frames"]
        net_fps = net_row["fps"] if net_row and name != NULL_ROW else None
        net_cpu = net_row.get("cpu_ms_per_frame") if net_row and name != NULL_ROW else None
        pred = predict(pipeline_stages(rates, net_fps, net_cpu, share, prep), cores)
        work = res["network_frames"] / res["wall_s"]  # network frames per second of the run
        pct = None if net_fps is None or name == PLAIN_ROW else round(100 * res["fps"] / net_fps, 1)
        pct_work = None if pct is None else round(100 * work / net_fps, 1)  # type: ignore[operator]
        pct_pred = pred.pct(res["fps"])
        # the frames' own window (render + encode, without mel, face cache and mux): what the
        # stage costs predict, free of the run's fixed costs that dominate short clips
        window = res["frames"] / max(res["render_s"] + res["encode_wait_s"], 1e-9)
        pct_window = pred.pct(window)
        row = s.add({"kind": "end_to_end", "option": name,
                     "exact": None if name == NULL_ROW else bool(net_row.get("exact", True)) if net_row else True,
                     "threads": s.threads, **res, "pct_network": pct, "pct_network_work": pct_work,
                     "predicted_fps": round(pred.fps, 3), "pct_predicted": None if pct_pred is None else round(pct_pred, 1),
                     "frames_window_fps": round(window, 3), "pct_predicted_window": None if pct_window is None else round(pct_window, 1),
                     "predicted_bound": pred.bound, "cpu_ms_prep": round(prep, 3),
                     "cpu_ms_network": None if net_cpu is None else round(net_cpu * share, 3)}, r.value)  # fmt: skip
        rel = "" if pct is None else f"  {pct:>5.1f}% of its network-only {net_fps:.2f}"
        s.say(f"  {name:<32} {res['fps']:>8.2f} frames/s  {res['wall_s']:>7.2f} s{rel}  "
              f"(waited on the encoder {res['encode_wait_s']:.2f} s)  others {row['others_pct']} %{busy(row)}")  # fmt: skip
        verdict = "" if pct_pred is None or pct_pred >= GOAL_PCT_PREDICTED else "  BELOW the goal"
        s.say(f"  {'':<32} predicted {describe(pred)} → measured {pct_pred or 0:.1f} % of it{verdict}; "
              f"the frames' own window (no mel, no mux) {window:.2f} frames/s = {pct_window or 0:.1f} %")  # fmt: skip
    return fps


def _job_for(s: Suite, wav: Path, loaded: LoadedRenderer) -> JobInputs:
    from ..inputs import build_inputs
    from ..jobs import frame_label
    from ..stages import StageTimer

    settings = Settings.from_config(s.cfg)
    job, _ = build_inputs(
        settings.face, settings.fps, wav, None, StageTimer(), f"prep#{time.time_ns()}"
    )
    job.label = frame_label(loaded.weights.trained, s.cfg)
    return job
