"""`lipbench bench --suite speed`: how close the whole path gets to this machine's compute floor.

In one process and one run it measures: matmul GFLOP/s at the benchmark's thread count →
the floor in frames/s (7.93 GFLOP per frame, 7.31 when a static avatar's face features are
computed once); network-only frames/s for each speed option; end-to-end frames/s (WAV → MP4,
sequential, static avatar) for the plain path and the default path; and, for the opt-in
options that change outputs, their error against plain fp32. Ratios are measured in the
same run; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_path, write_text_atomic
from .jobs import model_seed
from .model import FLOPS_PER_FRAME, Wav2Lip, fold_batchnorm
from .sysinfo import machine, versions

log = logging.getLogger("lipbench.speedbench")

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


def _prepare(model: Wav2Lip, v: Variant) -> Wav2Lip:
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
    m = _prepare(model, v)
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
    from .metrics import psnr

    ua = (a.numpy() * 255).astype(np.uint8)
    ub = (b.numpy() * 255).astype(np.uint8)
    d = np.abs(ua.astype(np.int16) - ub.astype(np.int16))
    return {
        "max_abs_px": int(d.max()),
        "mean_abs_px": round(float(d.mean()), 4),
        "psnr_db": round(psnr(ua, ub), 2),
    }


def end_to_end(
    cfg: dict[str, Any], wav: Path, options, threads: int, out: Path
) -> dict[str, float]:
    """WAV → MP4, sequential, in this process: mel, face (cached), render, encode, mux."""
    from . import audio
    from .chunk import render_chunk
    from .face import detect_faces, load_avatar
    from .plan import frame_count
    from .render import JobInputs, Renderer
    from .video import EncoderSettings, mux_audio
    from .weights import load_generator

    torch.set_num_threads(threads)
    model, info = load_generator(
        "gan", cfg["weights"]["dir"], cfg["weights"]["files"], seed=model_seed(cfg["seed"], "gan")
    )
    renderer = Renderer(model, "cpu", options)
    av = load_avatar(cfg["face"]["avatar"])
    f = cfg["face"]
    detect_faces(
        av, f["detector"], tuple(f["pads"]), f["smooth_frames"], f["cache_dir"]
    )  # warm the cache
    t0 = time.perf_counter()
    boxes = detect_faces(av, f["detector"], tuple(f["pads"]), f["smooth_frames"], f["cache_dir"])
    samples = audio.read_wav(wav)
    n = frame_count(len(samples), float(cfg["fps"]))
    job = JobInputs(
        audio.melspectrogram(samples), n, float(cfg["fps"]), av, boxes, meta={"key": str(out)}
    )
    video_only = out.with_name(out.stem + ".video.mp4")
    identity = dict(chunk=0, model="gan", replica=0, threads=threads, device="cpu")
    render_chunk(renderer, job, 0, n, video_only, EncoderSettings.from_config(cfg), identity)
    mux_audio(video_only, wav, out, cfg["video"]["ffmpeg"], cfg["video"]["audio_bitrate"])
    wall = time.perf_counter() - t0
    video_only.unlink(missing_ok=True)
    return {
        "frames": n,
        "wall_s": round(wall, 3),
        "fps": round(n / wall, 3),
        "batch_size": renderer.options.batch_size,
        "trained": info.trained,
    }


def memory_check(
    cfg: dict[str, Any], out_dir: Path, durations=(10.0, 60.0)
) -> list[dict[str, Any]]:
    """Peak RSS of a replica process rendering each duration (frames are streamed, so it
    should not grow with the audio's length)."""
    from .bench import make_speech
    from .pipeline import Workbench

    speech = make_speech(list(durations), out_dir / "memory_speech", cfg)
    rows = []
    print("\nmemory: peak RSS of a fresh sequential replica per clip length")
    for d in durations:
        with Workbench(cfg) as wb:  # a fresh replica per length: its peak is this job's
            rec = wb.generate(
                out_dir / f"memory_{d:g}s" / "result.mp4",
                audio=speech[d].wav,
                strategy="sequential",
                progress=False,
            ).to_dict()
        peak = rec["chunks"][0]["peak_rss_mb"]
        rows.append(
            {
                "kind": "memory",
                "option": f"sequential replica, {d:g} s",
                "peak_rss_mb": peak,
                "frames": rec["frames"],
            }
        )
        print(f"  {d:>5g} s of audio, {rec['frames']:>5} frames: peak RSS {peak:.0f} MB")
    return rows


def main(args: argparse.Namespace, cfg: dict[str, Any]) -> int:
    from .bench import make_speech
    from .render import RenderOptions

    threads = cfg["render"]["threads"] or os.cpu_count() or 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = float(args.seconds)
    per_variant_s = float(os.environ.get("LIPBENCH_SPEED_SECONDS", "4"))
    rows: list[dict[str, Any]] = []

    gflops = matmul_gflops(threads)
    floor = gflops / FLOPS_PER_FRAME["total"]
    floor_static = gflops / STATIC_GFLOP
    print(
        f"machine: {machine()['cpu']}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} thread(s)"
    )
    print(f"matmul 2048² fp32: {gflops:.1f} GFLOP/s → floor {floor:.2f} frames/s ({FLOPS_PER_FRAME['total']} GFLOP/frame), "
          f"{floor_static:.2f} frames/s with face features once ({STATIC_GFLOP:.2f} GFLOP/frame)")  # fmt: skip
    cgflops = conv_gflops(threads)
    conv_ceiling = cgflops / FLOPS_PER_FRAME["total"]
    conv_ceiling_static = cgflops / STATIC_GFLOP
    print(f"conv 3×3 256→256 fp32 (torch's conv kernels): {cgflops:.1f} GFLOP/s → ceiling {conv_ceiling:.2f} frames/s, "
          f"{conv_ceiling_static:.2f} with face features once")  # fmt: skip

    from .tuning import calibrate_batch
    from .weights import load_generator

    torch.set_num_threads(threads)
    model, info = load_generator(
        "gan", cfg["weights"]["dir"], cfg["weights"]["files"], seed=model_seed(cfg["seed"], "gan")
    )
    if not info.trained:
        print(
            "weights: SEEDED RANDOM (no checkpoint in weights/) — speed is the same as trained weights; outputs are not a lip-sync"
        )
    batch = cfg["render"]["batch_size"]
    if batch == "auto":
        batch = int(calibrate_batch(_prepare(model, VARIANTS[-1]), "cpu", threads)["batch_size"])
    print(f"batch size: {batch}")

    reference = None
    print(
        f"\n{f'network only (batch {batch})':<40} {'frames/s':>9} {'% floor':>8} {'% conv':>7} {'max px':>7} {'PSNR dB':>8}"
    )
    for v in VARIANTS + OPT_IN:
        fps, out = network_fps(model, v, batch, per_variant_s)
        if reference is None:
            reference = out
        err = pixel_error(out, reference)
        fl = floor_static if v.static else floor
        ceiling = conv_ceiling_static if v.static else conv_ceiling
        row = {
            "kind": "network",
            "option": v.name,
            "exact": v.exact,
            "fps": round(fps, 3),
            "floor_fps": round(fl, 3),
            "pct_floor": round(100 * fps / fl, 1),
            "pct_conv_ceiling": round(100 * fps / ceiling, 1),
            **err,
        }
        rows.append(row)
        print(
            f"{v.name:<40} {fps:>9.2f} {row['pct_floor']:>7.1f}% {row['pct_conv_ceiling']:>6.1f}% {err['max_abs_px']:>7d} {err['psnr_db']:>8}"
        )
    print(
        "int8 dynamic quantisation: not applicable — Wav2Lip has no nn.Linear/LSTM layers, so quantize_dynamic changes nothing"
    )

    speech = make_speech([seconds], out_dir / "speed_speech", cfg)[seconds]
    plain = RenderOptions.plain()
    default = RenderOptions.from_config(cfg)
    default.batch_size = batch
    print(
        f"\nend to end, WAV → MP4, sequential, static avatar, {seconds:g} s of speech ({speech.wav.name})"
    )
    e2e = {}
    for name, opts in (("plain path (before #8)", plain), ("default path", default)):
        res = end_to_end(cfg, speech.wav, opts, threads, out_dir / f"speed_{name.split()[0]}.mp4")
        e2e[name] = res
        net_default = next(r["fps"] for r in rows if r["option"].startswith("+ static"))
        row = {"kind": "end_to_end", "option": name, "exact": True, "fps": res["fps"], "wall_s": res["wall_s"], "frames": res["frames"],
               "floor_fps": round(floor_static, 3), "pct_floor": round(100 * res["fps"] / floor_static, 1),
               "pct_conv_ceiling": round(100 * res["fps"] / conv_ceiling_static, 1),
               "pct_network": round(100 * res["fps"] / net_default, 1)}  # fmt: skip
        rows.append(row)
        print(
            f"{name:<40} {res['fps']:>9.2f} frames/s  {res['wall_s']:>7.2f} s  {row['pct_floor']:>5.1f}% of floor  {row['pct_conv_ceiling']:>5.1f}% of conv ceiling  {row['pct_network']:>5.1f}% of network-only"
        )
    ratio = e2e["default path"]["fps"] / e2e["plain path (before #8)"]["fps"]
    print(f"speed-up of the default path over the plain path, this run: {ratio:.2f}×")

    if not getattr(args, "no_memory", False):
        rows.extend(memory_check(cfg, out_dir))

    df = pd.DataFrame(rows)
    for k, v in {"gflops": round(gflops, 2), "threads": threads, "cores": os.cpu_count(), "batch_size": batch,
                 "weights": info.source, "seconds": seconds}.items():  # fmt: skip
        df[k] = v
    csv = out_dir / "speed.csv"
    with atomic_path(csv) as tmp:
        df.to_csv(tmp, index=False)
    write_json(out_dir / "speed.json", {"suite": "speed", "gflops": gflops, "floor_fps": floor, "floor_static_fps": floor_static,
                                          "conv_gflops": cgflops, "conv_ceiling_fps": conv_ceiling, "conv_ceiling_static_fps": conv_ceiling_static,
                                          "rows": rows, "speedup_default_vs_plain": ratio, "machine": machine(), "versions": versions()})  # fmt: skip
    print(f"\nwrote {csv} and {out_dir / 'speed.json'}")
    return 0


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=float) + "\n")
