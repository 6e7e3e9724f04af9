"""`make gpu-check`: on a machine with CUDA, run the CUDA tests, the speed suite and the
strategy bench within a time budget (8 min) and write a results table (GPU name, date)
under docs/gpu-check/. Without a GPU it stops at once with one clear line."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BUDGET_S = 480.0  # the whole check: 8 minutes


@dataclass
class Step:
    name: str
    argv: list[str]
    cap_s: float  # at most this long, and never past the budget
    env: dict[str, str] | None = None


@dataclass
class Outcome:
    name: str
    status: str  # passed | failed (rc N) | timed out | skipped (budget spent)
    wall_s: float
    tail: str  # the step's last lines: its own tables


def gpu_facts() -> dict[str, str] | None:
    """GPU names and versions, or None when torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return None
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "gpu": ", ".join(f"cuda:{i} {n}" for i, n in enumerate(names)),
        "gpu_name": names[0],
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
    }


def steps(results: Path) -> list[Step]:
    py = sys.executable
    cli = [py, "-m", "lipbench.cli"]
    return [
        Step("CUDA tests", [py, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", "tests"], 150),
        Step("speed suite", [*cli, "bench", "--suite", "speed", "--device", "cuda", "--no-memory",
                             "--seconds", "10", "--out", str(results / "speed")], 180,
             {"LIPBENCH_SPEED_SECONDS": "2"}),
        Step("strategy bench", [*cli, "bench", "--suite", "strategies", "--device", "cuda",
                                "--durations", "5,10", "--repeats", "1",
                                "--out", str(results / "strategies")], 180),
    ]  # fmt: skip


def _text(x: bytes | str | None) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")


def run_steps(todo: list[Step], budget_s: float = BUDGET_S, tail_lines: int = 60) -> list[Outcome]:
    t0 = time.monotonic()
    out = []
    for step in todo:
        left = budget_s - (time.monotonic() - t0)
        if left < 10:
            out.append(Outcome(step.name, "skipped (budget spent)", 0.0, ""))
            continue
        t = time.monotonic()
        env = {**os.environ, **(step.env or {})}
        try:
            p = subprocess.run(step.argv, capture_output=True, text=True, env=env,
                               timeout=min(step.cap_s, left))  # fmt: skip
            status = "passed" if p.returncode == 0 else f"failed (rc {p.returncode})"
            text = p.stdout + p.stderr
        except subprocess.TimeoutExpired as exc:
            status = "timed out"
            text = _text(exc.stdout) + _text(exc.stderr)
        tail = "\n".join(text.rstrip().splitlines()[-tail_lines:])
        out.append(Outcome(step.name, status, round(time.monotonic() - t, 1), tail))
        print(f"gpu-check: {step.name}: {status} in {out[-1].wall_s:.0f} s", flush=True)
    return out


def report(facts: dict[str, str], outcomes: list[Outcome], when: str) -> str:
    """The markdown table (steps) and each step's own printed tables."""
    lines = [
        f"# GPU check — {facts['gpu_name']}, {when}",
        "",
        f"- GPU(s): {facts['gpu']}",
        f"- torch {facts['torch']}, CUDA {facts['cuda']}; budget {BUDGET_S:.0f} s",
        "",
        "| step | status | wall s |",
        "| --- | --- | --- |",
        *[f"| {o.name} | {o.status} | {o.wall_s:.1f} |" for o in outcomes],
    ]
    for o in outcomes:
        if o.tail:
            lines += ["", f"## {o.name}", "", "```", o.tail, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lipbench.backends.gpu_check")
    ap.add_argument("--docs", default="docs/gpu-check", help="folder for the results table")
    ap.add_argument("--results", default="results/gpu-check", help="folder for the raw outputs")
    args = ap.parse_args(argv)
    facts = gpu_facts()
    if facts is None:
        import torch

        print(
            f"error: gpu-check needs a CUDA GPU, and torch {torch.__version__} sees none "
            f"(CUDA build: {torch.version.cuda or 'no'}) — run `make gpu-check` on a machine with "
            "an NVIDIA GPU and a CUDA build of torch",
            file=sys.stderr,
        )
        return 2
    print(f"gpu-check on {facts['gpu']} (budget {BUDGET_S:.0f} s)", flush=True)
    outcomes = run_steps(steps(Path(args.results)))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    slug = re.sub(r"[^A-Za-z0-9]+", "-", facts["gpu_name"]).strip("-").lower()
    path = Path(args.docs) / f"{time.strftime('%Y-%m-%d', time.gmtime())}_{slug}.md"
    from ..atomic import write_text_atomic

    write_text_atomic(path, report(facts, outcomes, when))
    print(f"gpu-check: wrote {path}")
    return 0 if all(o.status == "passed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
