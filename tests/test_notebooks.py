"""The notebooks: committed without outputs; sweep → report → HTML works on a tiny grid with
a real kernel from this venv; explore runs on one of the sweep's records."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lipbench import bench

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
FIGURE_TITLES = [
    "Figure 1 · Speedup vs audio duration",
    "Figure 2 · Stage breakdown, sequential vs parallel",
    "Figure 3 · Replica Gantt chart",
    "Figure 4 · CPU utilisation and memory per replica",
    "Figure 5 · Measured decision tree",
]
TINY = {"durations": [1, 2], "chunk_counts": [2], "repeats": 1}


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
    "sweep": ["durations", "chunk_counts", "strategies", "model_sets", "repeats", "device",
              "text_source", "lang", "out_csv", "config_path", "seed"],
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


@pytest.fixture(scope="module")
def swept(tmp_path_factory, make_config):
    """sweep.ipynb on a tiny grid (2 durations × sequential/parallel-2 × 1 repeat)."""
    root = tmp_path_factory.mktemp("nb")
    cfg_path = root / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(make_config(root)))
    csv = root / "bench" / "sweep.csv"
    params = {**TINY, "out_csv": str(csv), "config_path": str(cfg_path)}
    nb = _execute(NOTEBOOKS / "sweep.ipynb", root / "sweep.out.ipynb", params)
    return root, csv, nb


def test_sweep_writes_tidy_csv_for_every_grid_point(swept):
    root, csv, nb = swept
    assert not _errors(nb)
    df = pd.read_csv(csv)
    assert list(df.columns) == bench.COLUMNS
    for d in TINY["durations"]:
        for config in ("sequential", "parallel 2 chunks"):
            got = df[(df.duration_s == d) & (df.config == config)]
            assert sorted(got.stage) == sorted(bench.STAGES), (d, config)
            assert got.seconds.notna().all() and (got.seconds >= 0).all()
    assert len(df) == 4 * len(bench.STAGES)
    assert set(df.weights) == {"seeded-random"}
    assert (df.cores >= 1).all() and (df.threads_per_replica >= 1).all()
    assert set(df.device) == {"cpu"} or set(df.device) == {"cuda"}
    # per run: frames match the duration (25 fps) and the planner's pick is recorded
    runs = df.groupby("run_id").first()
    assert sorted(set(runs.frames)) == [25, 50]
    assert (runs.planner_chunks == 1).all()
    side = bench.sidecar_paths(csv)
    assert len(bench.load_runs(side["runs"])) == 4
    assert pd.read_csv(side["speech"]).duration_s.tolist() == [1.0, 2.0]
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "SEEDED-RANDOM" in printed and "median total" in printed


@pytest.fixture(scope="module")
def report_html(swept):
    root, csv, _ = swept
    figs = root / "figures"  # out_dir/figures
    out = root / "report.out.ipynb"
    nb = _execute(NOTEBOOKS / "report.ipynb", out, {"sweep_csv": str(csv), "out_dir": str(root)})
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--no-input",
         "--output-dir", str(root), "--output", "report", str(out)],
        check=True, capture_output=True, cwd=REPO,
    )  # fmt: skip
    return nb, (root / "report.html").read_text(encoding="utf-8"), figs


def test_report_html_has_the_five_figures(report_html):
    nb, html, figs = report_html
    assert not _errors(nb)
    for title in FIGURE_TITLES:
        assert title in html
    images = re.findall(r'<img[^>]*src="data:image/png;base64,', html)
    assert len(images) >= 5
    assert sorted(p.name for p in figs.glob("*.png")) == [
        "decision.png", "gantt.png", "speedup.png", "stages.png", "utilisation.png",
    ]  # fmt: skip
    # --no-input: no code in the page; the text states machine, device and weights
    assert "import seaborn" not in html and "bench.run_speedups" not in html
    assert "Machine:" in html and "Device:" in html and "seeded-random" in html


def test_explore_runs_on_a_sweep_record(swept):
    root, csv, _ = swept
    record = next(
        r for r in bench.load_runs(bench.sidecar_paths(csv)["runs"]) if r["n_chunks"] == 2
    )
    run_json = Path(record["record"]["outputs"]["video"]).parent / "run.json"
    nb = _execute(
        NOTEBOOKS / "explore.ipynb", root / "explore.out.ipynb", {"run_json": str(run_json)}
    )
    assert not _errors(nb)
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert any("<video" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # crops + mel
