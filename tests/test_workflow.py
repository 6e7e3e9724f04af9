"""The Snakemake workflow, run for real in temporary directories (`-d TMP`) on one ~3 s
English job split into 2 chunks, with `--cores 2`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from lipbench.audio import duration_s
from lipbench.video import count_frames

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
JOB = "t"
TEXT = "Hello there, this is a short test of the workflow."  # ≈ 2.9 s with piper
CONFIG = {
    "jobs": [{"id": JOB, "text": TEXT, "lang": "en", "strategy": "parallel", "chunks": 2}],
}
STAGE_FILES = ["speech.wav", "tts.json", "audio.wav", "plan.json", "result.mp4", "run.json"]


def snakemake_cmd(workdir: Path, *args: str, snakefile: Path = SNAKEFILE) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir),
            "--configfile", str(workdir / "config.yaml"), *args]  # fmt: skip


def venv_env() -> dict[str, str]:
    """This venv first on PATH, as `make` and an activated venv have it."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(
    workdir: Path, *args: str, check: bool = True, snakefile: Path = SNAKEFILE
) -> subprocess.CompletedProcess:
    """Run Snakemake on `workdir` with its config.yaml; `.output` is stdout + stderr."""
    cmd = snakemake_cmd(workdir, *args, snakefile=snakefile)
    proc = subprocess.run(
        cmd, cwd=workdir, env=venv_env(), capture_output=True, text=True, timeout=600
    )
    proc.output = proc.stdout + proc.stderr  # Snakemake logs to stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.output[-4000:]}")
    return proc


def new_workdir(path: Path, config: dict = CONFIG) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def job_dir(workdir: Path) -> Path:
    return workdir / "results" / JOB


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running (or in a dry run)."""
    lines = output.split("Job stats:", 1)[1].splitlines()
    counts = {}
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def rule_blocks(output: str, rule: str) -> list[str]:
    """The job descriptions Snakemake prints for `rule` (inputs, outputs, resources, ...)."""
    return re.findall(rf"^(?:local)?rule {rule}:\n((?:    .*(?:\n|$))*)", output, re.M)


def mtimes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A workdir where the workflow has run to completion once."""
    workdir = new_workdir(tmp_path_factory.mktemp("wf") / "run")
    proc = snakemake(workdir, "--cores", "2")
    assert "infer_chunk" in proc.output
    return workdir


def copy_of(done: Path, tmp_path: Path) -> Path:
    """A copy of a finished workdir (outputs, Snakemake metadata, mtimes) to modify."""
    return Path(shutil.copytree(done, tmp_path / "copy", symlinks=True))


def test_lint_is_clean(tmp_path):
    proc = snakemake(new_workdir(tmp_path), "--lint")
    assert "Congratulations, your workflow is in a good condition" in proc.output


def test_dry_run_shows_the_dag_without_the_report(tmp_path):
    workdir = new_workdir(tmp_path)
    counts = job_counts(snakemake(workdir, "-n").output)
    # infer_chunk and the chunk count appear only once the plan checkpoint has run
    assert counts == {"tts": 1, "convert": 1, "plan": 1, "merge": 1, "all": 1, "total": 5}
    dag = snakemake(workdir, "--dag").stdout
    assert "digraph" in dag and "plan" in dag and "sweep" not in dag
    assert not (workdir / "results" / JOB).exists()


def test_full_run_outputs_match_the_audio(done):
    d = job_dir(done)
    for name in STAGE_FILES:
        assert (d / name).stat().st_size > 0, name
    plan = json.loads((d / "plan.json").read_text())
    assert plan["n_chunks"] == 2
    assert [c["model"] for c in plan["chunks"]] == ["gan", "nogan"]
    audio_s = duration_s(d / "audio.wav")
    expected = round(audio_s * 25)
    assert plan["n_frames"] == expected
    chunk_frames = [count_frames(d / "chunks" / f"{k}.mp4")[0] for k in range(2)]
    assert chunk_frames == [c["n_frames"] for c in plan["chunks"]]
    frames, secs = count_frames(d / "result.mp4")
    assert frames == expected == sum(chunk_frames)
    assert abs(secs - audio_s) <= 1 / 25 + 1e-6
    assert not list((d / "chunks").glob(".*")), "temp files left in chunks/"


def test_run_record_has_the_fields_of_lipbench_generate(done, tmp_path):
    rec = json.loads((job_dir(done) / "run.json").read_text())
    out = tmp_path / "gen" / "result.mp4"
    subprocess.run(
        [sys.executable, "-m", "lipbench.cli", "generate", "--audio", str(job_dir(done) / "audio.wav"),
         "--strategy", "parallel", "--chunks", "2", "--out", str(out), "--no-progress"],
        cwd=tmp_path, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    ref = json.loads(out.with_name("result.run.json").read_text())
    assert set(ref) <= set(rec), set(ref) - set(rec)
    assert set(rec["timings"]) == set(ref["timings"])
    assert set(rec["plan"]) == set(ref["plan"])
    for key in ("chunks", "replicas", "seams"):
        assert len(rec[key]) == len(ref[key])
        assert set(ref[key][0]) <= set(rec[key][0]), (key, set(ref[key][0]) - set(rec[key][0]))
    assert set(ref["cpu"]) <= set(rec["cpu"]) and rec["cpu"]["n"] > 0
    # what is particular to a workflow run
    assert rec["engine"] == "snakemake" and rec["strategy"] == "parallel"
    assert [c["model"] for c in rec["chunks"]] == ["gan", "nogan"]
    assert rec["tts"]["engine"] == "piper"
    assert rec["outputs"]["speech"].endswith("speech.wav")
    load = rec["model_load"]
    assert load["per_job"] is True and len(load["load_s"]) == 2
    assert set(rec["snakemake_benchmarks"]) >= {"tts", "convert", "plan", "infer_chunk_0"}
    # a chunk job's whole wall time includes its model load and render
    for job_s, chunk, load_s in zip(
        load["per_chunk_job_s"], rec["chunks"], load["load_s"], strict=True
    ):
        assert job_s >= chunk["wall_s"] + load_s - 0.5  # benchmark TSVs round to 10 ms
    assert rec["frames"] == rec["plan"]["n_frames"] == sum(c["frames"] for c in rec["chunks"])


def test_second_run_does_nothing(done):
    before = mtimes(job_dir(done))
    proc = snakemake(done, "--cores", "2")
    assert "Nothing to be done" in proc.output
    assert mtimes(job_dir(done)) == before


def test_deleted_chunk_rebuilds_only_that_chunk_and_the_merge(done, tmp_path):
    workdir = copy_of(done, tmp_path)
    d = job_dir(workdir)
    before = mtimes(d)
    (d / "chunks" / "1.mp4").unlink()
    proc = snakemake(workdir, "--cores", "2")
    assert job_counts(proc.output) == {"infer_chunk": 1, "merge": 1, "all": 1, "total": 3}
    after = mtimes(d)
    changed = {k for k in after if after[k] != before.get(k)}
    rebuilt = {"chunks/1.mp4", "chunks/1.json", "chunks/1.npz", "result.mp4", "run.json"}
    assert rebuilt <= changed
    assert not {k for k in changed - rebuilt if not k.startswith(("logs/", "benchmarks/"))}
    assert before["chunks/0.mp4"] == after["chunks/0.mp4"]
    assert (
        count_frames(d / "result.mp4")[0] == json.loads((d / "plan.json").read_text())["n_frames"]
    )


def kill_mid_chunk(workdir: Path, log: Path) -> Path:
    """Start the workflow, SIGKILL its whole process group (a crash: Snakemake gets no
    chance to clean up) while a chunk is being written; return that chunk's temp file."""
    chunks = job_dir(workdir) / "chunks"
    with open(log, "w") as out:
        proc = subprocess.Popen(snakemake_cmd(workdir, "--cores", "2"), cwd=workdir,
                                env=venv_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        part, tree = None, []
        try:
            deadline = time.monotonic() + 300
            while part is None and time.monotonic() < deadline and proc.poll() is None:
                # render-chunk writes a chunk to a temp file, renamed when complete
                part = next(iter(chunks.glob(".*.part.mp4")), None) if chunks.is_dir() else None
                time.sleep(0.02)
            if part is not None:
                tree = psutil.Process(proc.pid).children(recursive=True)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:  # anything that had left the process group
        p.kill()
    assert part is not None, "no chunk was being written:\n" + log.read_text()[-3000:]
    return part


def test_killed_chunk_is_not_complete_and_rerun_incomplete_finishes(done, tmp_path):
    workdir = copy_of(done, tmp_path)
    d = job_dir(workdir)
    shutil.rmtree(d / "chunks")
    (d / "result.mp4").unlink()
    (d / "run.json").unlink()
    part = kill_mid_chunk(workdir, tmp_path / "killed.log")
    k = int(part.name.split(".")[1])

    # Whatever the killed job left, Snakemake does not take the chunk as built.
    dry = snakemake(workdir, "-n").output
    to_build = " ".join(rule_blocks(dry, "infer_chunk"))
    assert f"output: results/{JOB}/chunks/{k}.mp4" in to_build

    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2", "--rerun-incomplete")
    plan = json.loads((d / "plan.json").read_text())
    assert count_frames(d / "result.mp4")[0] == plan["n_frames"]
    assert not list((d / "chunks").glob(".*")), "the killed attempt's temp files are still there"
    assert not any((workdir / ".snakemake" / "incomplete").iterdir())
    assert len(json.loads((d / "run.json").read_text())["chunks"]) == 2


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profiles_parse_in_a_dry_run(done, profile):
    proc = snakemake(done, "-n", "--profile", str(REPO / "config" / "profiles" / profile))
    assert "Nothing to be done" in proc.output


def test_slurm_profile_asks_for_a_gpu_only_on_cuda(done):
    """The shipped profile runs unchanged on a CPU-only cluster: no GPU unless the config
    asks for CUDA; threads come from the rule, not the profile; no partition hard-coded."""
    profile = str(REPO / "config" / "profiles" / "slurm")
    for extra, gpu in (([], "gpu=0"), (["--config", "device=cuda"], "gpu=1")):
        dry = snakemake(
            done, "-n", "--profile", profile, "--forcerun", "infer_chunk", *extra
        ).output
        blocks = rule_blocks(dry, "infer_chunk")
        assert len(blocks) == 2
        for block in blocks:
            assert gpu in block and "runtime=30" in block and "mem_mb=3000" in block
            assert "slurm_partition" not in block


def test_chunks_take_no_gpu_on_cpu(done):
    # (with device=cuda they take one: see the SLURM profile's dry run)
    dry = snakemake(done, "-n", "--forcerun", "infer_chunk", "--config", "device=cpu").output
    blocks = rule_blocks(dry, "infer_chunk")
    assert len(blocks) == 2 and all("gpu=0" in b for b in blocks)


def _notebook(path: Path, params: str, body: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_report_target_runs_the_notebooks(tmp_path):
    """`snakemake report` with stand-in notebooks (the real ones may not exist yet): a copy
    of the workflow beside them, so the repository's notebooks/ is not touched."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Snakefile", "environment.yml"):  # rules name environment.yml as their env
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "workflow" / "rules", repo / "workflow" / "rules")
    shutil.copytree(REPO / "config", repo / "config", symlinks=False)  # schema.yaml is a link
    _notebook(repo / "notebooks" / "sweep.ipynb", 'out_csv = ""\nconfig_path = ""',
              "import pathlib\npathlib.Path(out_csv).write_text('strategy,speedup\\nparallel,1.7\\n')\n"
              "assert pathlib.Path(config_path).is_file()")  # fmt: skip
    _notebook(repo / "notebooks" / "report.ipynb", 'sweep_csv = ""\nout_dir = ""',
              "print('speedup table:', open(sweep_csv).read())")  # fmt: skip
    workdir = new_workdir(tmp_path / "run")
    proc = snakemake(workdir, "--cores", "2", "report", snakefile=repo / "Snakefile")
    assert job_counts(proc.output) == {"sweep": 1, "report": 1, "total": 2}
    html = (workdir / "results" / "report" / "report.html").read_text()
    assert "parallel,1.7" in html
    assert "print(" not in html  # --no-input: outputs only
    assert not (workdir / "results" / JOB).exists()  # the report does not render the jobs
