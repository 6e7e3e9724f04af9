"""`lipbench bench --suite speed`: how close the whole path gets to this machine's compute floor.

In one process and one run it measures: matmul GFLOP/s at the benchmark's thread count →
the floor in frames/s (7.93 GFLOP per frame, 7.31 when a static avatar's face features are
computed once); network-only frames/s for each speed option; end-to-end frames/s (WAV → MP4,
sequential, static avatar) for the plain path and the default path; and, for the opt-in
options that change outputs, their error against plain fp32. Ratios are measured in the same
run; nothing is hard-coded. Every timed measurement is checked for contamination and marked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..atomic import write_text_atomic
from ..chunk import ReplicaSpec, load_renderer, render_chunk
from ..jobs import model_seed, threads_per_replica
from ..model import FLOPS_PER_FRAME
from ..pipeline import Workbench, build_inputs
from ..record import StageTimer
from ..render import RenderOptions
from ..sysinfo import machine, versions
from ..tuning import calibrate_batch
from ..video import EncoderSettings, mux_audio
from ..weights import load_generator
from .contamination import Contamination, watch
from .speech import make_speech
from .speed import (  # fmt: skip
    OPT_IN,
    STATIC_GFLOP,
    VARIANTS,
    conv_gflops,
    matmul_gflops,
    network_fps,
    pixel_error,
    prepare,
)

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    out: Path
    seconds: float = 20.0  # end-to-end clip length
    variant_seconds: float = 4.0  # timing per network variant
    memory: bool = True  # the 10 s / 60 s peak-RSS check


def _mark(row: dict[str, Any], cont: Contamination | None, limit: float) -> dict[str, Any]:
    if cont is not None:
        row["others_pct"] = round(100 * cont.share, 1)
        row["clean"] = cont.clean(limit)
    return row


def end_to_end(cfg: dict[str, Any], wav: Path, options: RenderOptions, threads: int, out: Path) -> dict[str, Any]:  # fmt: skip
    """WAV → MP4, sequential, in this process: mel, face (cached), render, encode, mux."""
    spec = dataclasses.replace(ReplicaSpec.from_config(cfg, "gan", threads, "cpu"), render_options=options)  # fmt: skip
    loaded = load_renderer(spec)
    build_inputs(cfg, wav, None, StageTimer(), "warm")  # fills the face cache: not timed
    t0 = time.perf_counter()
    job, _ = build_inputs(cfg, wav, None, StageTimer(), str(out))
    video_only = out.with_name(out.stem + ".video.mp4")
    identity = dict(chunk=0, model="gan", replica=0, threads=threads, device="cpu")
    render_chunk(loaded.renderer, job, 0, job.n_frames, video_only, EncoderSettings.from_config(cfg), identity)  # fmt: skip
    mux_audio(video_only, wav, out, cfg["video"]["ffmpeg"], cfg["video"]["audio_bitrate"])
    wall = time.perf_counter() - t0
    video_only.unlink(missing_ok=True)
    return {"frames": job.n_frames, "wall_s": round(wall, 3), "fps": round(job.n_frames / wall, 3),
            "batch_size": loaded.renderer.options.batch_size, "trained": loaded.weights.trained}  # fmt: skip


def memory_check(cfg: dict[str, Any], out_dir: Path, say: Say, durations=(10.0, 60.0)) -> list[dict[str, Any]]:  # fmt: skip
    """Peak RSS of a replica process rendering each duration (frames are streamed, so it
    should not grow with the audio's length)."""
    speech = make_speech(list(durations), out_dir / "memory_speech", cfg)
    rows = []
    say("\nmemory: peak RSS of a fresh sequential replica per clip length")
    for d in durations:
        with Workbench(cfg) as wb:  # a fresh replica per length: its peak is this job's
            rec = wb.generate(out_dir / f"memory_{d:g}s" / "result.mp4", audio=speech[d].wav,
                              strategy="sequential", progress=False)  # fmt: skip
        peak = rec.chunks[0].peak_rss_mb
        rows.append({"kind": "memory", "option": f"sequential replica, {d:g} s", "peak_rss_mb": peak, "frames": rec.frames})  # fmt: skip
        say(f"  {d:>5g} s of audio, {rec.frames:>5} frames: peak RSS {peak:.0f} MB")
    return rows


def run_speed_suite(cfg: dict[str, Any], opts: SpeedOptions, say: Say = print) -> pd.DataFrame:
    """Measure, print as it goes, write ``speed.csv`` and ``speed.json`` under ``opts.out``."""
    threads = threads_per_replica(1, cfg)
    limit = cfg["sweep"]["max_contamination"]
    opts.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with watch() as r_mm:
        gflops = matmul_gflops(threads)
    floor, floor_static = gflops / FLOPS_PER_FRAME["total"], gflops / STATIC_GFLOP
    say(
        f"machine: {machine()['cpu']}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s)"
    )
    say(f"matmul 2048² fp32: {gflops:.1f} GFLOP/s → floor {floor:.2f} frames/s ({FLOPS_PER_FRAME['total']} GFLOP/frame), "
        f"{floor_static:.2f} frames/s with face features once ({STATIC_GFLOP:.2f} GFLOP/frame)"
        f"{'' if r_mm.value.clean(limit) else ' — BUSY machine: a lower bound'}")  # fmt: skip
    cgflops = conv_gflops(threads)
    conv_ceiling, conv_static = cgflops / FLOPS_PER_FRAME["total"], cgflops / STATIC_GFLOP
    say(f"conv 3×3 256→256 fp32 (torch's conv kernels): {cgflops:.1f} GFLOP/s → ceiling {conv_ceiling:.2f} frames/s, "
        f"{conv_static:.2f} with face features once")  # fmt: skip

    torch.set_num_threads(threads)
    model, info = load_generator("gan", cfg["weights"]["dir"], cfg["weights"]["files"],
                                 seed=model_seed(cfg["seed"], "gan"))  # fmt: skip
    if not info.trained:
        say("weights: SEEDED RANDOM (no checkpoint in weights/) — speed is the same as trained weights; outputs are not a lip-sync")  # fmt: skip
    batch = cfg["render"]["batch_size"]
    if batch == "auto":
        batch = int(calibrate_batch(prepare(model, VARIANTS[-1]), "cpu", threads)["batch_size"])
    say(f"batch size: {batch}")
    say(f"\n{f'network only (batch {batch})':<40} {'frames/s':>9} {'% floor':>8} {'% conv':>7} {'max px':>7} {'PSNR dB':>8} {'others %':>8}")  # fmt: skip
    reference = None
    for v in VARIANTS + OPT_IN:
        with watch() as r:
            fps, out = network_fps(model, v, batch, opts.variant_seconds)
        reference = out if reference is None else reference
        err = pixel_error(out, reference)
        fl, ceiling = (floor_static, conv_static) if v.static else (floor, conv_ceiling)
        row = _mark({"kind": "network", "option": v.name, "exact": v.exact, "fps": round(fps, 3),
                     "floor_fps": round(fl, 3), "pct_floor": round(100 * fps / fl, 1),
                     "pct_conv_ceiling": round(100 * fps / ceiling, 1), **err}, r.value, limit)  # fmt: skip
        rows.append(row)
        say(f"{v.name:<40} {fps:>9.2f} {row['pct_floor']:>7.1f}% {row['pct_conv_ceiling']:>6.1f}% {err['max_abs_px']:>7d} {err['psnr_db']:>8} {row['others_pct']:>8}")  # fmt: skip
    say("int8 dynamic quantisation: not applicable — Wav2Lip has no nn.Linear/LSTM layers, so quantize_dynamic changes nothing")  # fmt: skip

    wav = make_speech([opts.seconds], opts.out / "speed_speech", cfg)[opts.seconds].wav
    default = dataclasses.replace(RenderOptions.from_config(cfg), batch_size=batch)
    net_default = next(r["fps"] for r in rows if r["option"].startswith("+ static"))
    say(
        f"\nend to end, WAV → MP4, sequential, static avatar, {opts.seconds:g} s of speech ({wav.name})"
    )
    e2e = {}
    for name, ro in (("plain path (before #8)", RenderOptions.plain()), ("default path", default)):
        with watch() as r:
            res = end_to_end(cfg, wav, ro, threads, opts.out / f"speed_{name.split()[0]}.mp4")
        e2e[name] = res
        row = _mark({"kind": "end_to_end", "option": name, "exact": True, "fps": res["fps"], "wall_s": res["wall_s"],
                     "frames": res["frames"], "floor_fps": round(floor_static, 3),
                     "pct_floor": round(100 * res["fps"] / floor_static, 1),
                     "pct_conv_ceiling": round(100 * res["fps"] / conv_static, 1),
                     "pct_network": round(100 * res["fps"] / net_default, 1)}, r.value, limit)  # fmt: skip
        rows.append(row)
        say(f"{name:<40} {res['fps']:>9.2f} frames/s  {res['wall_s']:>7.2f} s  {row['pct_floor']:>5.1f}% of floor  "
            f"{row['pct_conv_ceiling']:>5.1f}% of conv ceiling  {row['pct_network']:>5.1f}% of network-only  others {row['others_pct']} %")  # fmt: skip
    ratio = e2e["default path"]["fps"] / e2e["plain path (before #8)"]["fps"]
    say(f"speed-up of the default path over the plain path, this run: {ratio:.2f}×")
    busy = [r["option"] for r in rows if r.get("clean") is False]
    if busy:
        say(f"BUSY: other processes took more than {100 * limit:g} % of the machine during {len(busy)} of {len(rows)} "
            f"measurements ({', '.join(busy)}): read those figures as lower bounds")  # fmt: skip
    if opts.memory:
        rows.extend(memory_check(cfg, opts.out, say))

    df = pd.DataFrame(rows)
    for k, v in {"gflops": round(gflops, 2), "threads": threads, "cores": os.cpu_count(), "batch_size": batch,
                 "weights": info.source, "seconds": opts.seconds}.items():  # fmt: skip
        df[k] = v
    write_text_atomic(opts.out / "speed.csv", df.to_csv(index=False))
    doc = {"suite": "speed", "gflops": gflops, "floor_fps": floor, "floor_static_fps": floor_static,
           "conv_gflops": cgflops, "conv_ceiling_fps": conv_ceiling, "conv_ceiling_static_fps": conv_static,
           "rows": rows, "speedup_default_vs_plain": ratio, "machine": machine(), "versions": versions()}  # fmt: skip
    write_text_atomic(opts.out / "speed.json", json.dumps(doc, indent=2, default=float) + "\n")
    say(f"\nwrote {opts.out / 'speed.csv'} and {opts.out / 'speed.json'}")
    return df
