"""Each decision has one definition (issue 24's review list): a grep over the package finds
exactly one place for each, so the CLI, the server, the bench and the workflow cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lipbench"
WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"


def where(pattern: str, *, smk: bool = False) -> list[str]:
    """Files (relative to the package) whose code matches ``pattern``."""
    files = list(SRC.rglob("*.py")) + (list(WORKFLOW.rglob("*.smk")) if smk else [])
    rx = re.compile(pattern)
    return sorted(
        str(p.relative_to(SRC.parent if p.is_relative_to(SRC) else WORKFLOW.parent))
        for p in files
        if rx.search(p.read_text(encoding="utf-8"))
    )


@pytest.mark.parametrize(
    ("what", "pattern", "home"),
    [
        (
            "chunk k → replica k % n",
            r"\b\w+ % (len\(\w*models\w*\)|replicas\b|n_replicas\b)",
            ["lipbench/schedule.py"],
        ),
        ("the stream side folder", r"""/ ["']stream["']""", []),
        ("the playlist's name", r"""["']index\.m3u8["']""", ["lipbench/outputs.py"]),
        ("output names from --out", r"""\+ ["']\.run\.json["']""", ["lipbench/outputs.py"]),
        # typed settings are made from the config in request.py (jobs.py: the light job part);
        # the server's state and the bench's grid are front ends building their own objects
        (
            "settings read from the config",
            r"def from_config\(",
            [
                "lipbench/bench/grid.py",
                "lipbench/jobs.py",
                "lipbench/request.py",
                "lipbench/server/state.py",
            ],
        ),
        (
            "encoder / render options from the config",
            r"(EncoderSettings|RenderOptions)\.from_config",
            [],
        ),
        ("the job label", r"UNTRAINED_LABEL\b(?! =)", ["lipbench/jobs.py"]),
    ],
)
def test_one_definition(what, pattern, home):
    assert where(pattern) == home, what


def test_the_workflow_derives_threads_and_jobs_from_the_library():
    smk = "\n".join(p.read_text(encoding="utf-8") for p in WORKFLOW.rglob("*.smk"))
    assert "threads_per_replica(JOB_SETTINGS, plan_of(" in smk  # threads from the job's plan
    assert re.search(r"resolve_job\(JOB_SETTINGS", smk)
    assert "% len(" not in smk
