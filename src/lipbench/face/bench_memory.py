"""Peak memory of a video-avatar run by avatar length (a benchmark, not a test).

``python -m lipbench.face.bench_memory --seconds 10 60 180 --audio-s 32`` makes a 1920×1080
avatar of each length here (the astronaut photo drifting over a grey background, libx264),
a speech-like 16 kHz WAV, and for each length runs one sequential replica in a fresh child
process: ``build_inputs`` (load, detect on the frames used, mel), the chunk's
``JobInputs.for_range`` pickled and unpickled as a pool would send it, then
``lipbench.chunk.render_chunk`` over the whole job (seeded weights, torch, default render
options, the default encoder). The parent samples the RSS of the child's whole process tree
(ffmpeg decoder and encoder included; RSS and PSS) every 0.1 s and prints one row per length: peak RSS,
detection time, render time, frames, avatar frames decoded, decoder (re)starts, chunk-input
pickle size. Goal (issue 25): peaks within 10 % of each other, ≤ 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = (1920, 1080)


def make_avatar(path: Path, seconds: float, fps: float = 25.0) -> Path:
    """A ``seconds`` long 1080p clip: the astronaut (900 px) drifting left and right."""
    import imageio_ffmpeg

    from lipbench.face.avatar import _load_default  # noqa: F401  (the photo's location)

    png = Path(__import__("skimage").__file__).parent / "data" / "astronaut.png"
    w, h = SIZE
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "lavfi", "-i", f"color=c=gray:s={w}x{h}:r={fps}:d={seconds}",
        "-loop", "1", "-i", str(png),
        "-filter_complex", "[1]scale=900:900[a];[0][a]overlay=x='510+300*sin(t/2)':y=90:shortest=1",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23",
        "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    return path


def make_speech_like(path: Path, seconds: float, sr: int = 16000) -> Path:
    """Noise shaped into ~4 syllables a second with pauses: a mel that changes like speech."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    env = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) * (np.sin(2 * np.pi * 0.25 * t) > -0.6)
    x = (rng.standard_normal(len(t)) * env * 0.2).astype(np.float32)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def child(avatar: str, wav: str, work: str) -> None:
    """One sequential replica's work on one job; prints a JSON line."""
    import torch

    from lipbench.chunk import render_chunk
    from lipbench.face import FaceSettings
    from lipbench.inputs import build_inputs
    from lipbench.render import Renderer, RenderOptions
    from lipbench.stages import StageTimer
    from lipbench.video import EncoderSettings
    from lipbench.weights import load_generator

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    face = FaceSettings(cache_dir=str(Path(work) / "faces"))
    timer = StageTimer()
    t0 = time.perf_counter()
    job, _ = build_inputs(face, 25.0, Path(wav), avatar, timer, "bench-memory")
    detect_s = time.perf_counter() - t0
    blob = pickle.dumps(job.for_range(0, job.n_frames))
    task = pickle.loads(blob)  # what the replica renders from
    model, _ = load_generator("gan", "/nonexistent", seed=0)
    renderer = Renderer(model, "cpu", RenderOptions())
    t1 = time.perf_counter()
    ident = {"model": "gan", "replica": 0, "threads": torch.get_num_threads(), "device": "cpu",
             "chunk": 0}  # fmt: skip
    row, _ = render_chunk(renderer, task, 0, task.n_frames, Path(work) / "out.mp4",
                          EncoderSettings(fps=25.0), ident)  # fmt: skip
    video = task.avatar.video
    print(json.dumps({
        "frames": task.n_frames, "avatar_frames": len(task.avatar),
        "avatar_frames_used": len(job.boxes), "detect_s": round(detect_s, 1),
        "render_s": round(time.perf_counter() - t1, 1), "own_peak_rss_mb": row.peak_rss_mb,
        "decoded": video.decoded if video else 0, "decoder_starts": video.seeks if video else 0,
        "chunk_input_bytes": len(blob), "faceless": job.boxes.faceless_summary()["frames_without_face"],
    }))  # fmt: skip


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) summed over ``pid`` and its descendants. PSS splits pages shared between
    processes (the static ffmpeg binary's, mapped by decoder and encoder alike) among
    them: the sum is what the tree really holds. RSS counts shared pages once per process."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0.0
    rss = pss = 0
    for q in procs:
        try:
            m = q.memory_full_info()
            rss, pss = rss + m.rss, pss + m.pss
        except psutil.Error:
            pass
    return rss / 2**20, pss / 2**20


def measure(avatar: Path, wav: Path, work: Path) -> dict:
    cmd = [sys.executable, "-m", "lipbench.face.bench_memory", "--child", str(avatar), str(wav),
           str(work)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = peak_pss = 0.0
    while proc.poll() is None:
        rss, pss = tree_memory_mb(proc.pid)
        peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        time.sleep(0.1)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode})")
    row = json.loads(out.strip().splitlines()[-1])
    return {**row, "tree_peak_rss_mb": round(peak, 1), "tree_peak_pss_mb": round(peak_pss, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60, 180])
    ap.add_argument("--audio-s", type=float, default=32.0)
    ap.add_argument("--work", type=Path, default=None, help="keep the clips here")
    ap.add_argument("--child", nargs=3, metavar=("AVATAR", "WAV", "WORK"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(*a.child)
        return
    work = a.work or Path(tempfile.mkdtemp(prefix="lipbench-mem-"))
    work.mkdir(parents=True, exist_ok=True)
    wav = make_speech_like(work / "speech.wav", a.audio_s)
    rows = []
    for s in a.seconds:
        avatar = work / f"avatar_{s:g}s.mp4"
        if not avatar.exists():
            make_avatar(avatar, s)
        run_dir = work / f"run_{s:g}s"
        run_dir.mkdir(exist_ok=True)
        row = {"avatar_s": s, **measure(avatar, wav, run_dir)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for key in ("tree_peak_rss_mb", "tree_peak_pss_mb"):
        peaks = [r[key] for r in rows]
        print(f"{key} by avatar length (s): {dict(zip(a.seconds, peaks, strict=True))};"
              f" spread {100 * (max(peaks) / min(peaks) - 1):.1f} %")  # fmt: skip


if __name__ == "__main__":
    main()
