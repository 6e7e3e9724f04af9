"""The notebooks: committed without outputs; sweep → report → HTML works on a tiny grid set in
the config's `sweep:` section (as `snakemake report --config` sets it) with a real kernel from
this venv; the report says "not measurable" when the machine was busy; explore runs on a
record of the sweep."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lipbench.bench import COLUMNS, PAIR_COLUMNS, STAGES, load_runs, sidecar_paths

pytestmark = pytest.mark.process  # papermill runs each notebook in a kernel

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
FIGURE_TITLES = [
    "Figure 1 · Speed-up vs audio duration",
    "Figure 2 · Stage breakdown, sequential vs parallel",
    "Figure 3 · Replica Gantt chart",
    "Figure 4 · CPU utilisation and memory per replica",
    "Figure 5 · Measured decision tree",
    "Figure 6 · Cost model: why parallel wins or loses here",
    "Figure 7 · Latency vs throughput",
]
# Every run counts as clean (limit 100 %): this tests the notebooks, not the machine's quiet
# (test_bench.py does that); the busy report is tested on a copy marked contaminated.
TINY = {"durations": [0.5, 1], "chunk_counts": [2], "min_pairs": 2, "max_pairs": 2, "reruns": 0,
        "warmup_s": 0.5, "cost_clip_s": 0.5, "max_contamination": 1.0}  # fmt: skip


@pytest.mark.parametrize("name", ["explore", "sweep", "report"])
def test_committed_notebook_is_stripped_and_runnable(name):
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["metadata"]["language_info"]["name"] == "python"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code
    for c in code:
        assert c["outputs"] == [], f"{name}.ipynb has outputs: strip them before committing"
        assert c["execution_count"] is None
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}.ipynb needs exactly one cell tagged 'parameters'"


PARAMETERS = {
    "sweep": ["durations", "chunk_counts", "model_sets", "min_pairs", "max_pairs", "device",
              "text_source", "lang", "out_csv", "config_path", "seed", "stream"],
    "report": ["sweep_csv", "out_dir"],
    "explore": ["run_json", "avatar", "n_crops"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_papermill_sees_every_parameter(name):
    """papermill skips a parameter line it cannot parse (e.g. a second '=' in a comment):
    `papermill --help-notebook` and the workflow's `-p` must see each documented name."""
    from papermill.inspection import inspect_notebook

    assert list(inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb"))) == PARAMETERS[name]


def _execute(src: Path, out: Path, params: dict) -> dict:
    import papermill

    papermill.execute_notebook(
        str(src), str(out), parameters=params, kernel_name="python3", cwd=str(REPO),
        progress_bar=False,
    )  # fmt: skip
    return json.loads(out.read_text(encoding="utf-8"))


def _errors(nb: dict) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def _printed(nb: dict) -> str:
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def swept(tmp_path_factory, make_config):
    """sweep.ipynb with only the workflow's two parameters: the grid comes from the config."""
    root = tmp_path_factory.mktemp("nb")
    cfg = make_config(root, sweep=TINY, plan={"snap_silence": False}, render={"batch_size": 8})
    (root / "config.json").write_text(json.dumps(cfg))  # JSON, as the workflow's sweep rule writes
    csv = root / "bench" / "sweep.csv"
    params = {"out_csv": str(csv), "config_path": str(root / "config.json")}
    nb = _execute(NOTEBOOKS / "sweep.ipynb", root / "sweep.out.ipynb", params)
    return root, csv, nb


def test_sweep_writes_runs_and_pairs_for_every_grid_point(swept):
    root, csv, nb = swept
    assert not _errors(nb)
    df = pd.read_csv(csv)
    pairs = pd.read_csv(sidecar_paths(csv)["pairs"])
    assert list(df.columns) == COLUMNS and list(pairs.columns) == PAIR_COLUMNS
    for d in TINY["durations"]:
        got = pairs[pairs.duration_s == d]
        assert len(got) == 2 and got.clean.all() and list(got.sequential_first) == [True, False]
        for run_id in [*got.seq_run_id, *got.par_run_id]:
            assert sorted(df[df.run_id == run_id].stage) == sorted(STAGES), run_id
    runs = df.groupby("run_id").first()
    assert sorted(set(runs.frames)) == [12, 25] and set(runs.weights) == {"seeded-random"}
    assert len(load_runs(sidecar_paths(csv)["runs"])) == 8
    doc = json.loads(sidecar_paths(csv)["summary"].read_text())
    assert doc["grid"]["durations"] == TINY["durations"] and doc["measurable"] is True
    assert doc["cost_model"]["measurable"] and "On this machine" in doc["explanation"]
    # every run streamed (sweep.stream defaults to true); latency counts from each job's start
    runs_ = df.drop_duplicates("run_id")
    assert runs_.streamed.all() and (runs_.latency_origin == "job start").all()
    assert (runs_.first_playable_s > 0).all() and (runs_.stall_s >= 0).all()
    assert pairs.par_first_playable_s.notna().all() and len(doc["latency"]) == 4
    printed = _printed(nb)
    assert "SEEDED-RANDOM" in printed and "speed-up [95 % CI]" in printed


@pytest.fixture(scope="module")
def report_html(swept):
    root, csv, _ = swept
    return _report(csv, root / "report")


def _report(csv: Path, out_dir: Path) -> tuple[dict, str, Path]:
    out = out_dir / "report.out.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    nb = _execute(NOTEBOOKS / "report.ipynb", out, {"sweep_csv": str(csv), "out_dir": str(out_dir)})
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--no-input",
         "--output-dir", str(out_dir), "--output", "report", str(out)],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    return nb, (out_dir / "report.html").read_text(encoding="utf-8"), out_dir / "figures"


def test_report_html_has_every_figure_and_its_numbers(report_html, swept):
    nb, html, figs = report_html
    assert not _errors(nb)
    for title in FIGURE_TITLES:
        assert title in html
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', html)) >= 7
    assert sorted(p.name for p in figs.glob("*.png")) == [
        "cost_model.png", "decision.png", "gantt.png", "latency.png", "speedup.png", "stages.png",
        "utilisation.png",
    ]  # fmt: skip
    # --no-input: no code in the page; the text states machine, device, weights, protocol
    assert "import seaborn" not in html and "nb.typical_pair" not in html
    assert "Machine:" in html and "Device:" in html and "seeded-random" in html
    assert "0 of 8 timed runs were contaminated" in html
    # the table beside Figure 1 holds the chart's numbers: each median and its interval
    doc = json.loads(sidecar_paths(swept[1])["summary"].read_text())
    for row in doc["summary"]:
        assert (
            f"{row['speedup']:.2f}" in html
            and f"[{row['ci_low']:.2f}, {row['ci_high']:.2f}]" in html
        )
    assert "n = 2" in html and "Peak RSS in this run" in html
    assert doc["explanation"].split(":")[0] in html  # the generated paragraph
    # Figure 7's table and text hold the measured latency medians, written from the numbers
    for row in doc["latency"]:
        assert f"{row['median_first_s']:.2f}" in html and f"{row['frames_per_s']:.2f}" in html
    first = doc["latency"][0]
    assert f"At {first['duration_s']:g} s of speech: {first['config']} plays after {first['median_first_s']:.2f} s" in html  # fmt: skip
    assert "Every run streamed" in html and "first + stall" in html


def test_report_says_not_measurable_when_the_machine_was_busy(swept, tmp_path):
    """The same files marked as a busy machine leaves them: no speed-up, the reason instead."""
    _, csv, _ = swept
    side = sidecar_paths(csv)
    busy = tmp_path / "busy" / "sweep.csv"
    busy.parent.mkdir()
    reason = "other processes took a median 41 % of the machine in the contaminated runs"
    for key in ("csv", "pairs", "runs", "speech", "summary"):
        shutil.copy(side[key], sidecar_paths(busy)[key])
    for key in ("csv", "pairs"):
        frame = pd.read_csv(sidecar_paths(busy)[key]).assign(clean=False)
        frame.to_csv(sidecar_paths(busy)[key], index=False)
    doc = json.loads(sidecar_paths(busy)["summary"].read_text())
    doc.update(measurable=False, busy=reason, explanation=None,
               cost_model={"measurable": False, "busy": "no comparison was measurable"})  # fmt: skip
    sidecar_paths(busy)["summary"].write_text(json.dumps(doc))
    nb, html, figs = _report(busy, tmp_path / "busy_report")
    assert not _errors(nb)
    assert f"not measurable: the machine was busy ({reason})" in html
    assert "Highest median speed-up" not in html and "8 of 8 timed runs were" in html
    assert "matches the measured best" not in html  # no verdict on the seed's rule either
    assert sorted(p.name for p in figs.glob("*.png")) == []  # no chart of contaminated runs
    assert "s of speech:" not in html  # no latency of contaminated runs either


def test_explore_runs_on_a_sweep_record(swept):
    root, csv, _ = swept
    entry = next(e for e in load_runs(sidecar_paths(csv)["runs"]) if e["n_chunks"] == 2)
    nb = _execute(NOTEBOOKS / "explore.ipynb", root / "explore.out.ipynb", {"run_json": entry["record"]["outputs"]["record"]})  # fmt: skip
    assert not _errors(nb)
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert any("<video" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # crops + mel
