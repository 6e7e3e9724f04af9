"""`lipbench`'s arguments: every sub-command, its flags, their help and defaults. The
functions that run the commands are in ``lipbench.cli``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import tts
from .jobs import STRATEGIES


class _Defaults(argparse.HelpFormatter):
    """Help that names a flag's default where it has one and the text does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser(
    commands: dict[str, Callable[[argparse.Namespace], int]], doc: str
) -> argparse.ArgumentParser:
    """``commands``: each sub-command's function (``cli.COMMANDS``); ``doc``: the program's one-line description."""
    p = argparse.ArgumentParser(prog="lipbench", description=doc)
    p.add_argument(
        "--config", help="config YAML (default: ./config/config.yaml, else built-in defaults)"
    )
    p.add_argument(
        "--config-json", help="config sections as one JSON object (the workflow's rules use this)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("tts", help="text → speech file")
    s.add_argument("--text")
    s.add_argument("--lang", default="en")
    s.add_argument("--engine", choices=tts.ENGINES)
    s.add_argument("--out", help="output path (.wav; .mp3 for gtts)")
    s.add_argument("--list", action="store_true", help="list engines and their languages")
    s.add_argument(
        "--all", action="store_true", help="with --list: every language, not the first 20"
    )
    s.set_defaults(func=commands["tts"])

    s = sub.add_parser("convert", help="any audio → 16 kHz mono int16 WAV")
    s.add_argument("input")
    s.add_argument("output")
    s.set_defaults(func=commands["convert"])

    for name, func, helptext in (("plan", commands["plan"], "print the chunk plan (JSON) for a 16 kHz WAV"),
                                 ("split", commands["split"], "write chunk WAVs + sidecar JSON (frame ranges)")):  # fmt: skip
        s = sub.add_parser(name, help=helptext)
        s.add_argument("audio")
        s.add_argument("--strategy", choices=STRATEGIES, default="parallel")
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

    s = sub.add_parser("generate", help="text or audio → lip-synced MP4 + run.json",
                       formatter_class=_Defaults)  # fmt: skip
    src = s.add_mutually_exclusive_group()
    src.add_argument(
        "--text", help="what to say (neither --text nor --audio: the config's text.default)"
    )
    src.add_argument("--audio", help="speak this audio file instead (any format ffmpeg reads)")
    s.add_argument(
        "--lang", help="language of --text, e.g. en, ru (default: the config's text.lang)"
    )
    s.add_argument(
        "--engine", choices=tts.ENGINES, help="TTS engine (default: the config's tts.engine)"
    )
    s.add_argument(
        "--avatar", help="image or video (default: the config's, i.e. the astronaut photo)"
    )
    s.add_argument("--strategy", choices=STRATEGIES, default="sequential",
                   help="sequential: one replica, one chunk; parallel: chunks on several replicas")  # fmt: skip
    s.add_argument("--models", help="comma list of checkpoints, e.g. gan,nogan (parallel) or gan")
    s.add_argument(
        "--chunks", type=int, help="force a chunk count (default: the config's plan policy)"
    )
    s.add_argument(
        "--threads", type=int, help="torch threads per replica (default: cores ÷ replicas)"
    )
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the config's device")
    s.add_argument("--fps", type=float, help="output frames per second (default: the config's fps)")
    s.add_argument("--out", default="results/demo/result.mp4",
                   help="the video; its record and side files are named after it (NAME.run.json, NAME.files/)")  # fmt: skip
    s.add_argument(
        "--keep-chunks", action="store_true", help="keep the chunk videos in NAME.files/chunks/"
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--no-refine", action="store_true",
                   help="after a first run on this host, do not measure the other backends and batch sizes")  # fmt: skip
    s.add_argument("--stream", action="store_true",
                   help="also write ~1 s segments + a growing HLS playlist while rendering; "
                        "prints the playlist's path as soon as the first segment exists")  # fmt: skip
    s.set_defaults(func=commands["generate"])

    s = sub.add_parser("render-chunk", help="render one chunk of a plan (workflow step)")
    s.add_argument("--audio", required=True, help="the job's full 16 kHz WAV")
    s.add_argument("--plan", required=True)
    s.add_argument("--chunk", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--model", help="override the plan's model for this chunk")
    s.add_argument("--avatar")
    s.add_argument("--threads", type=int)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"])
    s.add_argument("--stamps", help="also write where and when this chunk job ran (JSON) here")
    s.add_argument("--step-start", type=float, help="when the workflow step began (epoch seconds)")
    s.set_defaults(func=commands["render-chunk"])

    s = sub.add_parser("merge", help="concat chunk videos, mux audio once, write run.json")
    s.add_argument("--plan", required=True)
    s.add_argument("--audio", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--record", help="write the run record here")
    s.add_argument("--benchmarks", nargs="*", default=[],
                   help="Snakemake benchmark TSVs (<stage>.tsv) to take stage timings from")  # fmt: skip
    s.add_argument("--strategy", default="parallel", choices=STRATEGIES)
    s.add_argument("--models", help="the job's checkpoints, comma list (default: the config's)")
    s.add_argument("--speech", help="the TTS output, named in the record's outputs")
    s.add_argument("--tts-info", help="the JSON that `lipbench tts` printed (the record's tts)")
    s.add_argument("--job-info", nargs="*", default=[],
                   help="each chunk job's stamps (render-chunk --stamps: where and when it ran), in order")  # fmt: skip
    s.add_argument(
        "--chunks", nargs="+", required=True, dest="chunk_files", help="the chunk videos, in order"
    )
    s.set_defaults(func=commands["merge"])

    s = sub.add_parser("bench", help="benchmark strategies (paired, with intervals) / speed options",
                       description="Grid defaults come from the config's sweep section. Exit status 3: "
                       "not measurable (other processes took the machine during too many runs).")  # fmt: skip
    s.add_argument("--suite", choices=["strategies", "speed"], default="strategies")
    s.add_argument("--durations", help="seconds of speech, comma list (default: sweep.durations)")
    s.add_argument("--strategies", help="must name both: sequential,parallel (kept for scripts)")
    s.add_argument("--models", help="parallel replicas, e.g. gan,nogan (default: sweep.model_sets)")
    s.add_argument(
        "--chunks",
        dest="chunk_counts",  # a comma list, not the int --chunks that _cfg checks
        help="parallel chunk counts, comma list (default: sweep.chunk_counts)",
    )
    s.add_argument("--min-pairs", type=int, help="clean pairs needed for a speed-up")
    s.add_argument("--max-pairs", "--repeats", type=int, dest="max_pairs",
                   help="cap on clean pairs per comparison (--repeats: its old name)")  # fmt: skip
    s.add_argument(
        "--ci-target", type=float, help="stop once the interval is < this fraction of the median"
    )
    s.add_argument(
        "--max-contamination",
        type=float,
        help="percent of the machine others may take in a run (default 5)",
    )
    s.add_argument("--reruns", type=int, help="contaminated pairs re-run per comparison")
    s.add_argument("--warmup-s", type=float, help="seconds of noise each pool renders first")
    s.add_argument("--cost-clip-s", type=float, help="seconds of noise per cost-model run")
    s.add_argument("--out", default="results/bench")
    s.add_argument("--seconds", type=float, default=20.0, help="speed suite: clip length")
    s.add_argument(
        "--variant-seconds",
        type=float,
        default=4.0,
        help="speed suite: seconds per network variant",
    )
    s.add_argument(
        "--no-memory", action="store_true", help="speed suite: skip the 10 s / 60 s peak-RSS check"
    )
    s.add_argument("--device", choices=["auto", "cpu", "cuda"])
    s.add_argument("--no-stream", action="store_true",
                   help="timed runs do not stream (their first playable frame = their total time)")  # fmt: skip
    s.add_argument("--avatar", dest="bench_avatar", metavar="AVATAR",
                   help="image or video every run renders on (default: the config's face.avatar)")  # fmt: skip
    s.set_defaults(func=commands["bench"])

    s = sub.add_parser("serve", help="web API + /parallel_test page")
    s.add_argument("--host", default=None, help="default: server.host (127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="default: server.port (3000)")
    s.set_defaults(func=commands["serve"])
    return p
