"""`lipbench` command line: the same steps the Snakemake rules, the notebooks and the server use.

Every command exits 0 on success; a problem the user can fix prints ONE line on stderr
(`error: <problem> — <fix>`) and exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import cli_args, tts
from .config import deep_merge, load_config
from .errors import LipbenchError
from .jobs import positive, resolve_job
from .memory import limit_malloc_arenas
from .outputs import refuse_input_as_output

log = logging.getLogger("lipbench")


def _models(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _cfg(args: argparse.Namespace) -> dict[str, Any]:
    """The config with the command's flags over it; flags are checked first, so a bad flag
    is reported as the flag, not as the config."""
    overrides: dict[str, Any] = {}
    if getattr(args, "device", None):
        if args.device == "cuda":
            _check_cuda_flag()
        overrides["device"] = args.device
    if getattr(args, "fps", None) is not None:
        positive(args.fps, "--fps", upper=120)
        overrides["fps"] = args.fps
    if getattr(args, "bench_avatar", None):  # the bench renders every run on this avatar
        overrides["face"] = {"avatar": args.bench_avatar}
    for flag in ("chunks", "threads"):
        positive(getattr(args, flag, None), f"--{flag}", upper=1024)
    if args.config_json:
        # The workflow passes each rule exactly the config sections it depends on (the same
        # sections its rerun trigger watches); no file is read.
        try:
            given = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise LipbenchError(
                f"--config-json is not valid JSON: {exc}", "pass a JSON object"
            ) from exc
        return load_config(None, deep_merge(given, overrides), read_default=False)
    return load_config(args.config, overrides)


def _check_cuda_flag() -> None:
    """``--device cuda`` on a machine whose torch sees no GPU: named as the flag."""
    import torch

    if not torch.cuda.is_available():
        raise LipbenchError(
            "--device cuda: torch sees no GPU here", "use --device auto or --device cpu"
        )


def cmd_tts(args: argparse.Namespace) -> int:
    if args.list:
        shown = None if args.all else 20
        for e in tts.list_engines():
            langs = e["languages"]
            more = (
                f", … ({len(langs)} in all; --all lists every one)"
                if shown and len(langs) > shown
                else ""
            )
            print(
                f"{e['name']:<7} {'offline' if e['offline'] else 'online '}  {', '.join(langs[:shown])}{more}"
            )
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
    res = tts.synthesize(args.text, args.lang, out, engine=engine,
                         max_chars=cfg["text"]["max_chars"], timeout_s=cfg["tts"]["timeout_s"])  # fmt: skip
    speech_s = _speech_seconds(res.path)
    info = {"path": str(res.path), "engine": res.engine, "lang": res.lang,
            "sample_rate": res.sample_rate, "speech_s": speech_s,
            "synthesis_s": round(res.seconds, 3), "chars": len(args.text)}  # fmt: skip
    print(json.dumps(info))
    length = "speech" if speech_s is None else f"{speech_s:.2f} s of speech"
    log.info("tts: %s, %s, %s from %d characters in %.2f s → %s",
             res.engine, res.lang, length, len(args.text), res.seconds, res.path)  # fmt: skip
    return 0


def _speech_seconds(path: Path) -> float | None:
    """The length of the spoken audio (None where the file's format cannot be read here)."""
    from . import audio

    try:
        return round(audio.duration_s(path), 3)
    except Exception:  # noqa: BLE001 - an MP3 on an old libsndfile: say nothing, not a wrong figure
        return None


def cmd_convert(args: argparse.Namespace) -> int:
    from . import audio

    refuse_input_as_output([args.input], [args.output], "output")
    out = audio.convert_to_wav16k(args.input, args.output)
    print(json.dumps({"path": str(out), "duration_s": round(audio.duration_s(out), 4),
                      "sample_rate": audio.SAMPLE_RATE}))  # fmt: skip
    return 0


def _plan(args: argparse.Namespace, cfg: dict[str, Any]):
    from . import audio
    from .plan import plan_audio
    from .request import Settings

    settings = Settings.from_config(cfg)
    job = resolve_job(settings.job, getattr(args, "strategy", "parallel"), _models(args.models), args.chunks)  # fmt: skip
    samples = audio.read_wav(args.audio)
    return samples, plan_audio(samples, settings, list(job.models), chunks=job.chunks, stream=False)


def cmd_plan(args: argparse.Namespace) -> int:
    if args.out:
        refuse_input_as_output([args.audio], [args.out], "--out")
    _, plan = _plan(args, _cfg(args))
    if args.out:
        plan.save(args.out)
    print(json.dumps(plan.to_dict(), indent=2))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from . import audio
    from .plan import Plan, write_chunk_wavs

    cfg = _cfg(args)
    out_dir = Path(args.out_dir)
    if out_dir.is_dir():  # an input named like an output (chunk_0.wav, chunk_0.json)
        named = [p for p in out_dir.iterdir() if p.name.startswith("chunk_")]
        refuse_input_as_output([args.audio, args.plan], named, "--out-dir file")
    if args.plan:
        samples, plan = audio.read_wav(args.audio), Plan.load(args.plan)
    else:
        samples, plan = _plan(args, cfg)
    paths = write_chunk_wavs(samples, plan, args.out_dir)
    print(json.dumps({"chunks": [str(p) for p in paths], "n_chunks": plan.n_chunks}))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    import time

    from .pipeline import Workbench
    from .request import GenerateRequest, Hooks, Settings

    marks = {"cli": _MAIN_TS, "imports": time.time()}
    settings = Settings.from_config(_cfg(args))
    # Built before anything starts: a bad flag, text, --out or stream setting fails at once.
    req = GenerateRequest.build(
        settings, args.out, text=args.text, audio=args.audio, lang=args.lang, engine=args.engine,
        avatar=args.avatar, strategy=args.strategy, models=_models(args.models), chunks=args.chunks,
        threads=args.threads, stream=args.stream, keep_chunks=args.keep_chunks,
        progress=not args.no_progress, keep_live_stream=True, hooks=Hooks(on_stream=_announce_stream),
        marks=marks,
    )  # fmt: skip
    with Workbench(settings, in_process_single=True) as wb:
        rec = wb.generate(req)
    stages = "  ".join(
        f"{k} {v:.2f}s" for k, v in rec.timings.to_dict().items() if isinstance(v, int | float)
    )
    print(
        f"wrote {rec.outputs.video} ({rec.frames} frames, {rec.plan['n_chunks']} chunk(s), {rec.strategy}) and {rec.outputs.record}"
    )
    print(f"timings: {stages}")
    if rec.timings.startup is not None:
        parts = {
            k.removesuffix("_s").replace("_", " "): v
            for k, v in rec.timings.startup.to_dict().items()
            if v is not None
        }
        split = ", ".join(f"{k} {v:.2f}s" for k, v in parts.items())
        calibrated = (
            " (the model's includes this host's one-time calibration, cached for later runs)"
            if _calibrated_this_run(rec)
            else ""
        )
        print(f"first frame {rec.timings.first_frame_s:.2f}s after process start: {split}{calibrated}")  # fmt: skip
    if rec.stream is not None:
        print(f"stream: {rec.stream.playlist} ({rec.stream.segments} segments)")
    if not rec.weights_trained:
        print(
            "NOTE: no checkpoint in weights/ — the mouth comes from SEEDED RANDOM (untrained) weights; see weights/README.md"
        )
    if not args.no_refine:
        _refine_after_first_video(settings, rec)
    return 0


def _refine_after_first_video(settings: Any, rec: Any) -> None:
    """A first run on this host took a quick provisional choice of backend and batch (so its
    first frame came within seconds); measure the rest now, after the video is published,
    once per machine and thread count. Later runs use the measured best."""
    from .chunk import ReplicaSpec
    from .tuning import refine_replica

    r = rec.replicas[0]
    if not (r.render.calibration or {}).get("provisional"):
        return
    print("measuring this host's other backends and batch sizes (once per machine, ~20 s; "
          "--no-refine skips it) …", flush=True)  # fmt: skip
    entry = refine_replica(ReplicaSpec.for_model(settings, r.model, r.render.threads, r.device))
    if entry:
        print(f"calibrated: {entry['backend']} {entry['precision']}, batch {entry['batch_size']} "
              f"({r.render.threads} thread(s)); later runs use it", flush=True)  # fmt: skip


def _calibrated_this_run(rec: Any) -> bool:
    """Whether a replica measured this host's calibration during this process (a first run)."""
    import time

    from .chunk import process_start_ts

    started = process_start_ts()
    for r in rec.replicas:
        measured = (r.render.calibration or {}).get("measured")
        if measured and time.mktime(time.strptime(measured, "%Y-%m-%dT%H:%M:%S")) >= started - 1:
            return True
    return False


def _announce_stream(playlist: Path) -> None:
    """Called once, when the first segment is listed: the live playlist's path."""
    print(f"streaming: {playlist}  (an HLS playlist that grows while rendering: open it in "
          "mpv, ffplay or VLC; it stays readable here after the run, and the finished stream "
          "is also in <out>.files/stream/)", flush=True)  # fmt: skip


def cmd_render_chunk(args: argparse.Namespace) -> int:
    """One chunk in its own process: the workflow's unit of work (`chunk.render_plan_chunk`)."""
    from .chunk import render_plan_chunk
    from .request import Settings

    row = render_plan_chunk(Settings.from_config(_cfg(args)), args.audio, args.plan, args.chunk, args.out,
                            model=args.model, avatar=args.avatar, threads=args.threads,
                            stamps=args.stamps, step_start_ts=args.step_start)  # fmt: skip
    print(json.dumps({k: getattr(row, k) for k in ("chunk", "model", "frames", "wall_s", "fps")}))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Concat chunk videos (stream copy), mux the audio once, verify, write run.json."""
    from .request import Settings
    from .stitch import merge_job

    merge_s, _ = merge_job(Settings.from_config(_cfg(args)), args.plan, args.audio, args.chunk_files, args.out, args.record,
                           args.benchmarks, args.strategy, args.speech, args.tts_info, args.job_info,
                           _models(args.models))  # fmt: skip
    print(json.dumps({"path": args.out, "chunks": len(args.chunk_files), "merge_s": merge_s}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Strategies (paired, with intervals; exit 3 when the machine was too busy to measure)
    or the speed suite."""
    cfg = _cfg(args)
    if args.suite == "speed":
        from .bench.speed_suite import SpeedOptions, run_speed_suite

        run_speed_suite(cfg, SpeedOptions(Path(args.out), args.seconds, args.variant_seconds, not args.no_memory))  # fmt: skip
        return 0
    from .bench import Grid, format_report
    from .bench.grid import parse_list
    from .bench.runner import run_bench

    models = parse_list(args.models, str, "models")
    grid = Grid.from_config(
        cfg, durations=parse_list(args.durations, float, "durations"),
        strategies=parse_list(args.strategies, str, "strategies"),
        chunk_counts=parse_list(args.chunk_counts, int, "chunk counts"),
        model_sets=[models] if models else None, min_pairs=args.min_pairs,
        max_pairs=args.max_pairs, ci_target=args.ci_target, reruns=args.reruns,
        max_contamination=None if args.max_contamination is None else args.max_contamination / 100,
        warmup_s=args.warmup_s, cost_clip_s=args.cost_clip_s,
        stream=False if args.no_stream else None,
    )  # fmt: skip
    result = run_bench(cfg, grid, Path(args.out) / "strategies.csv", cfg["sweep"]["text_source"])
    print("\n" + format_report(result))
    if not result.measurable:
        print(f"not measurable: the machine was busy ({result.busy_reason()})")
        return 3
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(_cfg(args), host=args.host, port=args.port)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "tts": cmd_tts, "convert": cmd_convert, "plan": cmd_plan, "split": cmd_split,
    "generate": cmd_generate, "render-chunk": cmd_render_chunk, "merge": cmd_merge,
    "bench": cmd_bench, "serve": cmd_serve,
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    return cli_args.build_parser(COMMANDS, __doc__.splitlines()[0])


class Terminated(BaseException):
    """SIGTERM (kill, timeout, docker stop, Slurm): handled like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


_MAIN_TS: float | None = None  # when main() began (the record's timings.startup)


def main(argv: list[str] | None = None) -> int:
    global _MAIN_TS
    import time

    _MAIN_TS = time.time()
    limit_malloc_arenas()  # before any thread allocates (see lipbench.memory)
    signal.signal(signal.SIGTERM, _on_sigterm)
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
        print("error: interrupted — nothing was published; run the command again", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated (SIGTERM) — nothing was published; run the command again", file=sys.stderr)  # fmt: skip
        return 143
    except Exception as exc:  # noqa: BLE001 - one line for users; -v shows the traceback
        if args.verbose:
            raise
        if isinstance(exc, OSError) and exc.filename:  # an unwritable folder, a full disk, ...
            print(f"error: cannot write or read {exc.filename}: {exc.strerror} — check the path and its permissions",
                  file=sys.stderr)  # fmt: skip
            return 2
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
