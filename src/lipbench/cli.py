"""`lipbench` command line: the same steps the Snakemake rules, the notebooks and the server use.

Every command exits 0 on success; a problem the user can fix prints ONE line on stderr
(`error: <problem> — <fix>`) and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import LipbenchError

log = logging.getLogger("lipbench")


def _models(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _cfg(args: argparse.Namespace) -> dict[str, Any]:
    from .config import load_config

    overrides: dict[str, Any] = {}
    if getattr(args, "device", None):
        overrides["device"] = args.device
    if getattr(args, "fps", None):
        overrides["fps"] = args.fps
    return load_config(args.config, overrides)


def cmd_tts(args: argparse.Namespace) -> int:
    from . import tts

    if args.list:
        for e in tts.list_engines():
            langs = e["languages"]
            shown = ", ".join(langs[:20]) + (
                f", … ({len(langs)} in all)" if len(langs) > 20 else ""
            )
            print(f"{e['name']:<7} {'offline' if e['offline'] else 'online '}  {shown}")
        return 0
    if args.text is None:
        raise LipbenchError("no text given", 'pass --text "…" (or --list to see engines)')
    cfg = _cfg(args)
    engine = tts.resolve_engine(args.engine or cfg["tts"]["engine"], args.lang)
    out = (
        Path(args.out)
        if args.out
        else Path(cfg["results_dir"]) / f"speech{tts.output_suffix(engine)}"
    )
    res = tts.synthesize(
        args.text,
        args.lang,
        out,
        engine=engine,
        max_chars=cfg["text"]["max_chars"],
        timeout_s=cfg["tts"]["timeout_s"],
    )
    print(
        json.dumps(
            {
                "path": str(res.path),
                "engine": res.engine,
                "lang": res.lang,
                "sample_rate": res.sample_rate,
                "seconds": round(res.seconds, 3),
                "chars": len(args.text),
            }
        )
    )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from . import audio

    out = audio.convert_to_wav16k(args.input, args.output)
    print(
        json.dumps(
            {
                "path": str(out),
                "duration_s": round(audio.duration_s(out), 4),
                "sample_rate": audio.SAMPLE_RATE,
            }
        )
    )
    return 0


def _plan(args: argparse.Namespace, cfg: dict[str, Any]):
    from . import audio
    from .plan import plan_from_config

    samples = audio.read_wav(args.audio)
    strategy = getattr(args, "strategy", "parallel")
    models = _models(args.models) or (
        cfg["parallel"]["models"] if strategy == "parallel" else [cfg["sequential"]["model"]]
    )
    chunks = 1 if strategy == "sequential" else args.chunks
    return samples, plan_from_config(samples, cfg, models, chunks=chunks)


def cmd_plan(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    _, plan = _plan(args, cfg)
    if args.out:
        plan.save(args.out)
    print(json.dumps(plan.to_dict(), indent=2))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from . import audio
    from .plan import Plan, write_chunk_wavs

    cfg = _cfg(args)
    if args.plan:
        samples, plan = audio.read_wav(args.audio), Plan.load(args.plan)
    else:
        samples, plan = _plan(args, cfg)
    paths = write_chunk_wavs(samples, plan, args.out_dir)
    print(json.dumps({"chunks": [str(p) for p in paths], "n_chunks": plan.n_chunks}))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .pipeline import Workbench

    cfg = _cfg(args)
    text = args.text
    if text is None and args.audio is None:
        text = cfg["text"]["default"]
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise LipbenchError(
            f"--out must end in .mp4 (got {out})", "e.g. --out results/demo/result.mp4"
        )
    with Workbench(cfg) as wb:
        rec = wb.generate(
            out.parent, text=text, lang=args.lang, audio=args.audio, strategy=args.strategy, models=_models(args.models),
            chunks=args.chunks, engine=args.engine, avatar=args.avatar, threads=args.threads, progress=not args.no_progress,
            keep_chunks=args.keep_chunks,
        )  # fmt: skip
    produced = Path(rec["outputs"]["video"])
    if produced.resolve() != out.resolve():
        produced.replace(out)
        rec["outputs"]["video"] = str(out)
    t = rec["timings"]
    stages = "  ".join(f"{k} {v:.2f}s" for k, v in t.items())
    print(
        f"wrote {out} ({rec['frames']} frames, {rec['plan']['n_chunks']} chunk(s), {rec['strategy']}) and {out.parent / 'run.json'}"
    )
    print(f"timings: {stages}")
    if not rec["weights_trained"]:
        print(
            "NOTE: no checkpoint in weights/ — the mouth comes from SEEDED RANDOM (untrained) weights; see weights/README.md"
        )
    return 0


def cmd_render_chunk(args: argparse.Namespace) -> int:
    """One chunk in its own process (the workflow's unit of work): load the model, render the
    chunk's frame range from the FULL-file mel, encode a video-only chunk, write its stats."""
    import numpy as np
    import torch

    from .atomic import atomic_path, write_text_atomic
    from .config import resolve_device
    from .metrics import UsageSampler
    from .pipeline import build_job, default_threads, model_seed
    from .plan import Plan
    from .pool import render_chunk
    from .records import StageTimer
    from .render import UNTRAINED_LABEL, Renderer, RenderOptions
    from .video import EncoderSettings
    from .weights import load_generator

    cfg = _cfg(args)
    plan = Plan.load(args.plan)
    if not 0 <= args.chunk < plan.n_chunks:
        raise LipbenchError(
            f"chunk {args.chunk} not in the plan (it has {plan.n_chunks})", "pick 0 … n_chunks-1"
        )
    chunk = plan.chunks[args.chunk]
    model_name = args.model or chunk.model
    device = resolve_device(cfg)
    threads = args.threads or default_threads(1, cfg)
    torch.set_num_threads(threads)
    timer = StageTimer()
    with timer.stage("model_load"):
        model, info = load_generator(
            model_name,
            cfg["weights"]["dir"],
            cfg["weights"]["files"],
            seed=model_seed(cfg["seed"], model_name),
            device=device,
        )
        renderer = Renderer(model, device, RenderOptions.from_config(cfg))
    label = None if info.trained or not cfg["weights"]["label_untrained"] else UNTRAINED_LABEL
    job, _ = build_job(
        cfg, Path(args.audio), args.avatar, timer, label, job_id=str(Path(args.plan).resolve())
    )
    if job.n_frames != plan.n_frames:
        raise LipbenchError(
            f"plan {args.plan} has {plan.n_frames} frames but {args.audio} gives {job.n_frames}",
            "re-run the plan step for this audio",
        )
    # Same sampler as the pool's infer stage; `merge` joins every chunk's samples into `cpu`.
    usage_t0 = time.time()
    with UsageSampler(pids=[os.getpid()]) as usage:
        stats, edges = render_chunk(
            renderer,
            job,
            chunk.frame_start,
            chunk.frame_end,
            args.out,
            EncoderSettings.from_config(cfg),
        )
    stats.update(chunk=chunk.index, model=model_name, threads=threads, device=device, replica=f"job-{chunk.index}", attempts=1,
                 pid=os.getpid(), model_load_s=timer.stages["model_load"], detect_s=timer.stages.get("detect"), mel_s=timer.stages.get("split"),
                 weights={k: getattr(info, k) for k in ("name", "path", "source", "sha256", "seed", "trained")},
                 render_options=vars(renderer.options), batch_size=renderer.options.batch_size,
                 calibration=renderer.calibration, usage={"t0": usage_t0, **usage.summary()})  # fmt: skip
    stats_path = Path(args.stats) if args.stats else Path(args.out).with_suffix(".json")
    with atomic_path(stats_path.with_suffix(".npz")) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, first=edges["first"], last=edges["last"], steps=np.asarray(edges["steps"])
            )
    write_text_atomic(stats_path, json.dumps(stats, indent=2) + "\n")
    print(
        json.dumps(
            {k: stats[k] for k in ("chunk", "model", "frames", "wall_s", "fps", "model_load_s")}
        )
    )
    return 0


def _joined_usage(usages: list[dict[str, Any] | None], t0: float) -> dict[str, Any]:
    """One `cpu` summary for a workflow run, shaped like the pool's: every chunk job's
    samples (system CPU %, its own RSS), with times counted from the first chunk's start."""
    samples: list[dict[str, Any]] = []
    interval = None
    for u in usages:
        if not u:
            continue
        interval = u.get("interval_s")
        samples += [{**x, "t": round(u["t0"] + x["t"] - t0, 3)} for x in u.get("samples", [])]
    samples.sort(key=lambda x: x["t"])
    cpu = [x["cpu_percent"] for x in samples]
    return {
        "interval_s": interval,
        "n": len(cpu),
        "cpu_percent_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
        "cpu_percent_max": round(max(cpu), 1) if cpu else None,
        "samples": samples,
    }


def cmd_merge(args: argparse.Namespace) -> int:
    """Concat chunk videos (stream copy), mux the audio once, write run.json from the
    per-chunk stats that render-chunk left beside each chunk."""
    import numpy as np

    from .pipeline import record_from_chunk_files
    from .plan import Plan
    from .records import write_record
    from .video import merge_chunks

    cfg = _cfg(args)
    plan = Plan.load(args.plan)
    chunks = [Path(c) for c in args.chunks]
    if len(chunks) != plan.n_chunks:
        raise LipbenchError(
            f"{len(chunks)} chunk files given, the plan has {plan.n_chunks}",
            "pass every chunk in order",
        )
    out = Path(args.out)
    t0 = time.perf_counter()
    merge_chunks(chunks, args.audio, out, cfg["video"]["ffmpeg"], cfg["video"]["audio_bitrate"])
    merge_s = time.perf_counter() - t0
    if args.record:
        stats = [json.loads(c.with_suffix(".json").read_text()) for c in chunks]
        # Per-run data, not per-chunk rows: lifted out before the rows go into the record.
        usages = [s.pop("usage", None) for s in stats]
        options = [s.pop("render_options", None) for s in stats]
        edges = []
        for c in chunks:
            z = np.load(c.with_suffix(".npz"))
            edges.append({"first": z["first"], "last": z["last"], "steps": list(z["steps"])})
        rec = record_from_chunk_files(
            cfg, plan, stats, edges, merge_s, out, Path(args.audio), args.benchmarks, args.strategy
        )
        tts_info = json.loads(Path(args.tts_info).read_text()) if args.tts_info else None
        rec["tts"] = tts_info and {
            k: tts_info.get(k) for k in ("engine", "lang", "sample_rate", "chars")
        }
        rec["outputs"]["speech"] = args.speech
        rec["cpu"] = _joined_usage(usages, min(s["start_ts"] for s in stats))
        rec["restarts"] = sum(s.get("attempts", 1) - 1 for s in stats)
        rec["render_options"] = options[0]
        # Each chunk job's whole wall time (process start, imports, model load, detect, mel,
        # render) from its Snakemake benchmark: what a warm replica pool does not pay per job.
        job_s = [rec["snakemake_benchmarks"].get(f"infer_chunk_{s['chunk']}") for s in stats]
        if all(j is not None for j in job_s):
            rec["model_load"]["per_chunk_job_s"] = job_s
            rec["model_load"]["per_chunk_overhead_s"] = [
                round(j - s["wall_s"], 4) for j, s in zip(job_s, stats, strict=True)
            ]
        write_record(args.record, rec)
    print(json.dumps({"path": str(out), "chunks": len(chunks), "merge_s": round(merge_s, 3)}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.main(args, _cfg(args))


def cmd_serve(args: argparse.Namespace) -> int:
    from . import server

    return server.main(args, _cfg(args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lipbench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", help="config YAML (default: ./config/config.yaml, else built-in defaults)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("tts", help="text → speech file")
    s.add_argument("--text")
    s.add_argument("--lang", default="en")
    s.add_argument("--engine", choices=["auto", "piper", "espeak", "gtts"])
    s.add_argument("--out", help="output path (.wav; .mp3 for gtts)")
    s.add_argument("--list", action="store_true", help="list engines and their languages")
    s.set_defaults(func=cmd_tts)

    s = sub.add_parser("convert", help="any audio → 16 kHz mono int16 WAV")
    s.add_argument("input")
    s.add_argument("output")
    s.set_defaults(func=cmd_convert)

    for name, func, helptext in (("plan", cmd_plan, "print the chunk plan (JSON) for a 16 kHz WAV"),
                                 ("split", cmd_split, "write chunk WAVs + sidecar JSON (frame ranges)")):  # fmt: skip
        s = sub.add_parser(name, help=helptext)
        s.add_argument("audio")
        s.add_argument("--strategy", choices=["sequential", "parallel"], default="parallel")
        s.add_argument("--models", help="comma list, e.g. gan,nogan")
        s.add_argument(
            "--chunks", type=int, help="force a chunk count (default: the config's policy)"
        )
        s.add_argument("--fps", type=float)
        if name == "plan":
            s.add_argument("--out", help="also save the plan here")
        else:
            s.add_argument("--plan", help="use this plan.json instead of planning again")
            s.add_argument("--out-dir", required=True)
        s.set_defaults(func=func)

    s = sub.add_parser("generate", help="text or audio → lip-synced MP4 + run.json")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--text")
    src.add_argument("--audio")
    s.add_argument("--lang")
    s.add_argument("--engine", choices=["auto", "piper", "espeak", "gtts"])
    s.add_argument(
        "--avatar", help="image or video (default: the config's, i.e. the astronaut photo)"
    )
    s.add_argument("--strategy", choices=["sequential", "parallel"], default="sequential")
    s.add_argument("--models", help="comma list of checkpoints, e.g. gan,nogan (parallel) or gan")
    s.add_argument("--chunks", type=int)
    s.add_argument("--threads", type=int, help="torch threads per replica")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"])
    s.add_argument("--fps", type=float)
    s.add_argument("--out", default="results/demo/result.mp4")
    s.add_argument("--keep-chunks", action="store_true")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("render-chunk", help="render one chunk of a plan (workflow step)")
    s.add_argument("--audio", required=True, help="the job's full 16 kHz WAV")
    s.add_argument("--plan", required=True)
    s.add_argument("--chunk", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--stats", help="stats JSON (default: beside --out)")
    s.add_argument("--model", help="override the plan's model for this chunk")
    s.add_argument("--avatar")
    s.add_argument("--threads", type=int)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"])
    s.set_defaults(func=cmd_render_chunk)

    s = sub.add_parser("merge", help="concat chunk videos, mux audio once, write run.json")
    s.add_argument("--plan", required=True)
    s.add_argument("--audio", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--record", help="write the run record here")
    s.add_argument(
        "--benchmarks", help="folder of Snakemake benchmark TSVs to take stage timings from"
    )
    s.add_argument("--strategy", default="parallel")
    s.add_argument("--speech", help="the TTS output, named in the record's outputs")
    s.add_argument("--tts-info", help="the JSON that `lipbench tts` printed (the record's tts)")
    s.add_argument("chunks", nargs="+")
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser("bench", help="benchmark strategies / speed options")
    s.add_argument("--suite", choices=["strategies", "speed"], default="strategies")
    s.add_argument("--durations", default="5,10,20", help="seconds of speech, comma list")
    s.add_argument("--strategies", default="sequential,parallel")
    s.add_argument("--models", default=None, help="parallel replicas, e.g. gan,nogan")
    s.add_argument(
        "--chunks",
        default=None,
        help="comma list of chunk counts for parallel (default: the planner's)",
    )
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--out", default="results/bench")
    s.add_argument("--seconds", type=float, default=20.0, help="speed suite: clip length")
    s.add_argument(
        "--no-memory", action="store_true", help="speed suite: skip the 10 s / 60 s peak-RSS check"
    )
    s.add_argument("--device", choices=["auto", "cpu", "cuda"])
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("serve", help="web API + /parallel_test page")
    s.add_argument("--host", default=None)
    s.add_argument("--port", type=int, default=None)
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except LipbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for users; -v shows the traceback
        if args.verbose:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
