"""`lipbench bench --suite speed`: how close the whole path gets to this machine's ceiling, and
which stage limits it.

In one process and one run, on the device the config names: matmul and conv-kernel GFLOP/s
at each thread count (the replica's, and 1 for the parallel cost model) → ceilings in
frames/s; network-only frames/s of the torch layout options; every backend × precision
available here at each thread count, with its % of the conv ceiling at the same thread count
and its fidelity vs plain fp32 on the loaded checkpoint; paste-back and H.264 encode alone
(frames/s each, on real rendered frames); and end to end (WAV → MP4, sequential) for the
plain path and each backend × precision, as a % of its own network-only rate. Every timed
figure carries the share of the machine other processes took meanwhile; nothing is
hard-coded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..atomic import write_text_atomic
from ..backends import has_bf16_hardware
from ..backends.fidelity import MIN_PSNR_DB, reference
from ..backends.measure import choices, measure_one
from ..chunk import LoadedRenderer, ReplicaSpec, load_renderer
from ..config import resolve_device
from ..jobs import frame_label, model_seed, threads_per_replica
from ..model import FLOPS_PER_FRAME
from ..pipeline import build_inputs
from ..record import StageTimer
from ..render import JobInputs, RenderOptions
from ..sysinfo import machine, versions
from ..tuning import calibrate_batch
from ..video import EncoderSettings
from ..weights import load_generator
from .contamination import Contamination, watch
from .speech import make_speech
from .speed import (  # fmt: skip
    STATIC_GFLOP,
    VARIANTS,
    conv_gflops,
    encode_fps,
    encoder_variants,
    matmul_gflops,
    network_fps,
    paste_fps,
    pixel_error,
    prepare,
)
from .speed_runs import end_to_end, memory_check

Say = Callable[[str], None]
GOAL_PCT_NETWORK = 80.0  # end to end should reach this % of network-only (issue #16)


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    out: Path
    seconds: float = 20.0  # end-to-end clip length
    variant_seconds: float = 4.0  # timing per network measurement
    memory: bool = True  # the 10 s / 60 s peak-RSS check
    stage_seconds: float = 1.5  # timing per paste / encode measurement


@dataclasses.dataclass
class Suite:
    """What the steps share: the config, device, thread counts and the rows so far."""

    cfg: dict[str, Any]
    opts: SpeedOptions
    say: Say
    device: str
    threads: int  # the sequential replica's thread count
    limit: float
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def thread_counts(self) -> tuple[int, ...]:
        """The replica's threads and 1 (the parallel cost model's unit); one count on a GPU."""
        return (self.threads, 1) if self.threads > 1 and self.device == "cpu" else (self.threads,)

    def add(self, row: dict[str, Any], cont: Contamination | None) -> dict[str, Any]:
        if cont is not None:
            row["others_pct"] = round(100 * cont.share, 1)
            row["clean"] = cont.clean(self.limit)
        self.rows.append(row)
        return row


def _busy(row: dict[str, Any]) -> str:
    return "" if row.get("clean", True) else "  BUSY"


def load_average() -> str:
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def ceilings(s: Suite) -> dict[int, dict[str, float]]:
    """matmul and conv GFLOP/s at each thread count → frames/s ceilings (full, static)."""
    s.say(f"\nceilings on {s.device}, fp32 (and bf16 where it is native)   (frames/s = GFLOP/s ÷ {FLOPS_PER_FRAME['total']} GFLOP per frame, "
          f"÷ {STATIC_GFLOP:.2f} with a static avatar's face features once)")  # fmt: skip
    bf16 = has_bf16_hardware() or s.device != "cpu"  # a bf16 ceiling: where bf16 is native
    s.say(f"{'threads':>7} {'matmul GFLOP/s':>15} {'floor fps':>10} {'conv GFLOP/s':>13} {'conv ceiling':>13} {'static':>7}"
          + (f" {'bf16 conv GFLOP/s':>18} {'static':>7}" if bf16 else "") + f" {'others %':>9}")  # fmt: skip
    out = {}
    for t in s.thread_counts:
        with watch() as r:
            mm = matmul_gflops(t, device=s.device)
            cv = conv_gflops(t, device=s.device)
            cv16 = conv_gflops(t, device=s.device, dtype=torch.bfloat16) if bf16 else None
        c = {"matmul_gflops": mm, "conv_gflops": cv, "floor": mm / FLOPS_PER_FRAME["total"],
             "floor_static": mm / STATIC_GFLOP, "conv": cv / FLOPS_PER_FRAME["total"], "conv_static": cv / STATIC_GFLOP}  # fmt: skip
        if cv16:
            c |= {"conv_bf16_gflops": cv16, "conv_bf16": cv16 / FLOPS_PER_FRAME["total"], "conv_bf16_static": cv16 / STATIC_GFLOP}  # fmt: skip
        out[t] = c
        row = s.add({"kind": "ceiling", "option": f"{t} thread(s)", "threads": t, "exact": True,
                     **{k: round(v, 3) for k, v in c.items()}}, r.value)  # fmt: skip
        extra = f" {cv16:>18.1f} {c['conv_bf16_static']:>7.2f}" if cv16 else ""
        s.say(f"{t:>7} {mm:>15.1f} {c['floor']:>10.2f} {cv:>13.1f} {c['conv']:>13.2f} {c['conv_static']:>7.2f}{extra} {row['others_pct']:>9}{_busy(row)}")  # fmt: skip
    return out


def torch_options(s: Suite, model: torch.nn.Module, batch: int, ceil: dict[str, float]) -> None:
    """torch eager fp32 layout options at the replica's threads: what each exact one buys."""
    torch.set_num_threads(s.threads)
    s.say(f"\n{f'torch eager fp32 options ({s.threads} threads)':<40} {'frames/s':>9} {'% floor':>8} {'% conv':>7} {'max px':>7} {'PSNR dB':>8} {'others %':>9}")  # fmt: skip
    reference_out = None
    for v in VARIANTS:
        with watch() as r:
            fps, out = network_fps(model, v, batch, s.opts.variant_seconds, s.device)
        reference_out = out if reference_out is None else reference_out
        err = pixel_error(out, reference_out)
        fl, cv = (
            (ceil["floor_static"], ceil["conv_static"])
            if v.static
            else (ceil["floor"], ceil["conv"])
        )
        row = s.add({"kind": "network", "option": v.name, "backend": "torch", "precision": "fp32", "threads": s.threads,
                     "exact": v.exact, "fps": round(fps, 3), "floor_fps": round(fl, 3), "pct_floor": round(100 * fps / fl, 1),
                     "pct_conv_ceiling": round(100 * fps / cv, 1), **err}, r.value)  # fmt: skip
        s.say(f"{v.name:<40} {fps:>9.2f} {row['pct_floor']:>7.1f}% {row['pct_conv_ceiling']:>6.1f}% {err['max_abs_px']:>7d} {err['psnr_db']:>8} {row['others_pct']:>9}{_busy(row)}")  # fmt: skip


def backend_rows(s: Suite, model: torch.nn.Module, batch: int, path: str, ceils: dict[int, dict[str, float]]) -> list[dict[str, Any]]:  # fmt: skip
    """Every backend × precision here × thread count: network-only frames/s, % of the conv
    ceiling at the same thread count and in the same precision (bf16 against the bf16 one),
    fidelity vs plain fp32 on this checkpoint."""
    measured, skipped = choices(s.device)
    s.say(f"\nbackends, network only, {path} path, batch {batch}; fidelity vs plain fp32 on this checkpoint "
          f"(exact = max ≤ 1 level of 255)")  # fmt: skip
    s.say(f"{'backend':<9} {'precision (runs as)':<20} {'threads':>7} {'frames/s':>9} {'% conv':>7} {'max px':>7} {'PSNR dB':>8} {'exact':>6} {'others %':>9}")  # fmt: skip
    probe = reference(model, s.device, n=8)
    before = torch.get_num_threads()
    rows = []
    try:
        for backend, precision in measured:
            for t in s.thread_counts:
                with watch() as r:
                    m = measure_one(model, backend, precision, t, probe, batch=batch,
                                    seconds=s.opts.variant_seconds, path=path, device=s.device)  # fmt: skip
                # % of the conv ceiling in the precision the network runs as
                bf = (
                    "_bf16"
                    if m["effective_precision"] == "bf16" and "conv_bf16" in ceils[t]
                    else ""
                )
                cv = ceils[t][f"conv{bf}" + ("_static" if path == "static" else "")]
                row = s.add({"kind": "backend", "option": f"{backend} {precision}", **m,
                             "pct_conv_ceiling": round(100 * m["fps"] / cv, 1)}, r.value)  # fmt: skip
                rows.append(row)
                prec = f"{precision} ({m['effective_precision']})"
                psnr = "identical" if m["psnr_db"] is None else f"{m['psnr_db']:.1f}"
                s.say(f"{backend:<9} {prec:<20} {t:>7} {m['fps']:>9.2f} {row['pct_conv_ceiling']:>6.1f}% {m['max_abs_px']:>7} "
                      f"{psnr:>8} {'yes' if m['exact'] else 'NO':>6} {row['others_pct']:>9}{_busy(row)}")  # fmt: skip
    finally:
        torch.set_num_threads(before)
    for backend, precision, why in skipped:
        s.say(f"  not measured: {backend} {precision} — {why}")
    return rows


def renderer_for(s: Suite, row: dict[str, Any], batch: int) -> LoadedRenderer:
    opts = dataclasses.replace(RenderOptions.from_config(s.cfg), backend=row["backend"],
                               precision=row["precision"], batch_size=batch)  # fmt: skip
    spec = dataclasses.replace(ReplicaSpec.from_config(s.cfg, "gan", s.threads, s.device), render_options=opts)  # fmt: skip
    return load_renderer(spec)


def stages(s: Suite, loaded: LoadedRenderer, job: JobInputs, net_fps: float, name: str) -> dict[str, float]:  # fmt: skip
    """Paste-back and H.264 encode alone, on frames this renderer really makes, and what
    their CPU cost predicts for end to end on this machine's cores."""
    n = min(job.n_frames, 2 * int(loaded.renderer.options.batch_size))
    faces = [f for _, batch in loaded.renderer.generated_faces(job, 0, n) for f in batch]
    frames = list(loaded.renderer.render(job, 0, n))
    w, h = job.avatar.size
    s.say(
        f"\nstages alone, {w}×{h} avatar (each given the whole machine){'frames/s':>27} {'CPU ms/frame':>13}"
    )
    s.say(f"  {'network only, ' + name:<78} {net_fps:>9.2f} {1000 * s.threads / net_fps if s.device == 'cpu' else 0:>13.1f}")  # fmt: skip
    with watch() as r:
        p = paste_fps(job, faces, s.opts.stage_seconds)
    row = s.add({"kind": "stage", "option": "paste-back", "fps": round(p, 2), "cpu_ms_per_frame": round(1000 / p, 3), "exact": True}, r.value)  # fmt: skip
    s.say(f"  {'paste-back (resize 96² → box, paste' + (', label)' if job.label else ')'):<78} {p:>9.2f} {1000 / p:>13.2f}   others {row['others_pct']} %{_busy(row)}")  # fmt: skip
    rates = {"network": net_fps, "paste": p}
    for label, enc in encoder_variants(EncoderSettings.from_config(s.cfg)):
        with watch() as r:
            e, cpu_ms = encode_fps(
                frames, enc, s.opts.out / ".encode_probe.mp4", s.opts.stage_seconds
            )
        desc = f"H.264 encode, {label}: x264 {enc.preset}, crf {enc.crf}, tune {enc.tune}, keyframe {enc.keyframe_s:g} s"
        row = s.add({"kind": "stage", "option": desc, "fps": round(e, 2), "cpu_ms_per_frame": round(cpu_ms, 3), "exact": True}, r.value)  # fmt: skip
        s.say(f"  {desc:<78} {e:>9.2f} {cpu_ms:>13.2f}   others {row['others_pct']} %{_busy(row)}")
        if "encode" not in rates:
            rates["encode"], rates["encode_cpu_ms"] = e, cpu_ms
    # frames/s ≤ each stage's own rate, and ≤ cores ÷ the CPU seconds one frame takes in all
    cpu_s = (
        (s.threads / net_fps if s.device == "cpu" else 0.0) + 1 / p + rates["encode_cpu_ms"] / 1000
    )
    rates["predicted"] = min(net_fps, p, rates["encode"], (os.cpu_count() or 1) / cpu_s)
    slowest = min(("network", "paste", "encode"), key=rates.get)
    s.say(f"  slowest stage alone: {slowest}; predicted end to end from the CPU each stage takes on "
          f"{os.cpu_count()} cores: {rates['predicted']:.2f} frames/s ({100 * rates['predicted'] / net_fps:.0f} % of network-only)")  # fmt: skip
    return rates


def end_to_end_rows(s: Suite, wav: Path, batch: int, paths: list[dict[str, Any]]) -> dict[str, float]:  # fmt: skip
    """The plain path, then each backend × precision at the replica's threads, WAV → MP4."""
    s.say(
        f"\nend to end, WAV → MP4, sequential, {s.threads} threads, {s.opts.seconds:g} s of speech ({wav.name})"
    )
    plain = dataclasses.replace(ReplicaSpec.from_config(s.cfg, "gan", s.threads, s.device), render_options=RenderOptions.plain())  # fmt: skip
    runs = [("plain path (before #8)", None, lambda: load_renderer(plain))]
    runs += [
        (f"{r['backend']} {r['precision']}", r, lambda r=r: renderer_for(s, r, batch))
        for r in paths
    ]
    fps = {}
    for name, net_row, load in runs:
        loaded = load()
        with watch() as r:
            res = end_to_end(
                s.cfg,
                wav,
                loaded,
                s.device,
                s.opts.out / f"speed_{name.split(' (')[0].replace(' ', '_')}.mp4",
            )
        del loaded
        fps[name] = res["fps"]
        work = res["network_frames"] / res["wall_s"]  # network frames per second of the run
        pct = None if net_row is None else round(100 * res["fps"] / net_row["fps"], 1)
        pct_work = None if net_row is None else round(100 * work / net_row["fps"], 1)
        row = s.add({"kind": "end_to_end", "option": name, "exact": net_row is None or bool(net_row["exact"]),
                     "threads": s.threads, **res, "pct_network": pct, "pct_network_work": pct_work}, r.value)  # fmt: skip
        rel = "" if pct is None else f"  {pct:>5.1f}% of its network-only {net_row['fps']:.2f}"
        s.say(f"  {name:<28} {res['fps']:>8.2f} frames/s  {res['wall_s']:>7.2f} s{rel}  "
              f"(waited on the encoder {res['encode_wait_s']:.2f} s)  others {row['others_pct']} %{_busy(row)}")  # fmt: skip
        if res["network_frames"] != res["frames"]:
            s.say(f"  {'':<28} the network ran {res['network_frames']} of {res['frames']} frames (identical mel windows once): "
                  f"{work:.2f} network frames/s{'' if pct_work is None else f' = {pct_work:.1f} % of network-only'}")  # fmt: skip
    return fps


def _header(s: Suite) -> None:
    import importlib.metadata as md

    try:
        ov = md.version("openvino")
    except md.PackageNotFoundError:
        ov = "not installed"
    s.say(
        f"machine: {machine()['cpu']}, {os.cpu_count()} cores; torch {torch.__version__}, openvino {ov}"
    )
    s.say(f"device: {s.device} (config device: {s.cfg['device']}); {s.threads} thread(s) per replica; "
          f"bf16 hardware: {'yes' if has_bf16_hardware() else 'no'}; load average {load_average()} at start")  # fmt: skip


def run_speed_suite(cfg: dict[str, Any], opts: SpeedOptions, say: Say = print) -> pd.DataFrame:
    """Measure, print as it goes, write ``speed.csv`` and ``speed.json`` under ``opts.out``."""
    device = resolve_device(cfg)
    s = Suite(
        cfg,
        opts,
        say,
        device,
        threads_per_replica(1, cfg),
        float(cfg["sweep"]["max_contamination"]),
    )
    opts.out.mkdir(parents=True, exist_ok=True)
    _header(s)
    ceils = ceilings(s)
    torch.set_num_threads(s.threads)
    model, info = load_generator("gan", cfg["weights"]["dir"], cfg["weights"]["files"],
                                 seed=model_seed(cfg["seed"], "gan"), device=device)  # fmt: skip
    if not info.trained:
        say("weights: SEEDED RANDOM (no checkpoint in weights/) — speed is the same as trained weights; outputs are not a lip-sync")  # fmt: skip
    batch = cfg["render"]["batch_size"]
    if batch == "auto":
        batch = int(calibrate_batch(prepare(model, VARIANTS[-1]), device, s.threads)["batch_size"])
    say(f"batch size: {batch}")
    torch_options(s, model, batch, ceils[s.threads])

    wav = make_speech([opts.seconds], opts.out / "speed_speech", cfg)[opts.seconds].wav
    job, _ = build_inputs(cfg, wav, None, StageTimer(), "speed-suite")
    job.label = frame_label(info.trained, cfg)
    static = job.avatar.is_static and cfg["render"]["static_face_features"]
    nets = backend_rows(s, model, batch, "static" if static else "full", ceils)
    mine = [r for r in nets if r["threads"] == s.threads]
    exact = [r for r in mine if r["exact"]]
    fastest = max(exact or mine, key=lambda r: r["fps"])
    name = f"fastest exact path: {fastest['backend']} {fastest['precision']}, {s.threads} threads"
    loaded = renderer_for(s, fastest, batch)
    rates = stages(s, loaded, job, fastest["fps"], name)
    del loaded

    # every pair measured here, inexact ones included: their end-to-end rate is labelled
    e2e = end_to_end_rows(s, wav, batch, sorted(mine, key=lambda r: -r["fps"]))
    plain_fps = e2e["plain path (before #8)"]
    best = f"{fastest['backend']} {fastest['precision']}"
    erow = next(r for r in s.rows if r["kind"] == "end_to_end" and r["option"] == best)
    pct, pct_work = erow["pct_network"], erow["pct_network_work"]
    used = [fastest, erow, next(r for r in s.rows if r["option"] == "plain path (before #8)")]
    # the goal is judged on the network's own work: paste and encode keep up when the network
    # runs in the pipeline about as fast as alone (frames it skipped as repeats don't count)
    goal = f"the {GOAL_PCT_NETWORK:g} % goal"
    verdict = f"meets {goal}" if pct_work >= GOAL_PCT_NETWORK else f"BELOW {goal}"
    if any(r.get("clean") is False for r in used):
        verdict = f"no verdict on {goal}: measured while the machine was BUSY"
    say(f"fastest exact path end to end: {e2e[best]:.2f} frames/s = {pct:.1f} % of its network-only rate, "
        f"{pct_work:.1f} % counting only the frames the network computed ({verdict}); "
        f"{e2e[best] / plain_fps:.2f}× the plain path")  # fmt: skip
    for r in mine:
        if not r["exact"]:
            n = f"{r['backend']} {r['precision']}"
            bar = "passes" if r["passes_psnr"] else "FAILS"
            say(f"inexact path {n}: {e2e[n] / plain_fps:.2f}× the plain path end to end, "
                f"PSNR {r['psnr_db']} dB, max {r['max_abs_px']} levels ({bar} the {MIN_PSNR_DB:g} dB bar)")  # fmt: skip
    say(f"load average {load_average()} at the end")
    busy = [r for r in s.rows if r.get("clean") is False]
    if busy:
        shares = sorted(r["others_pct"] for r in busy)
        say(f"BUSY: other processes took more than {100 * s.limit:g} % of the machine during {len(busy)} of {len(s.rows)} "
            f"measurements ({shares[0]:g}–{shares[-1]:g} %, marked BUSY above): read those figures as lower bounds")  # fmt: skip
    if opts.memory:
        s.rows.extend(memory_check(cfg, opts.out, say))

    df = pd.DataFrame(s.rows)
    for k, v in {"device": device, "threads_per_replica": s.threads, "cores": os.cpu_count(), "batch_size": batch,
                 "weights": info.source, "seconds": opts.seconds}.items():  # fmt: skip
        df[k] = v
    write_text_atomic(opts.out / "speed.csv", df.to_csv(index=False))
    doc = {"suite": "speed", "device": device, "ceilings": {str(t): c for t, c in ceils.items()},
           "stages_fps": rates, "fastest_exact": fastest, "end_to_end_fps": e2e,
           "speedup_fastest_exact_vs_plain": e2e[best] / plain_fps, "rows": s.rows,
           "machine": machine(), "versions": versions()}  # fmt: skip
    write_text_atomic(opts.out / "speed.json", json.dumps(doc, indent=2, default=float) + "\n")
    say(f"\nwrote {opts.out / 'speed.csv'} and {opts.out / 'speed.json'}")
    return df
