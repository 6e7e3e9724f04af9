"""The workflow on a real single-node Slurm: Debian's slurmctld, slurmd and munge, no
accounting (so no sacct, as on many small sites), run through the shipped SLURM profile
with only the partition set. tests/slurm/single_node.sh brings the cluster up (or reuses a
running one) and stops what it started.

One ~2 s English job in 2 chunks, so two chunk jobs run side by side on the node. The first
run is interrupted like Ctrl-C in a terminal while the chunks render; the rerun must finish
and report its own facts. Where root or apt-get is missing the tests skip with the reason;
under CI=true they fail instead.

    CI=true python -m pytest -q -m slurm tests/test_slurm.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import imageio_ffmpeg
import psutil
import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "slurm" / "single_node.sh"
PROFILE = REPO / "config" / "profiles" / "slurm" / "config.yaml"
JOB = "t"
TEXT = "Hello there, this is a short test."  # ≈ 2 s with piper
CONFIG = {"jobs": [{"id": JOB, "text": TEXT, "lang": "en", "strategy": "parallel", "chunks": 2}]}
CANNOT = 77  # single_node.sh: "cannot start a Slurm here", reason on stderr


def slurm(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def partition():
    """A running single-node Slurm; yields its default partition's name."""
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode == CANNOT:
        reason = (up.stderr.strip().splitlines() or ["no reason given"])[-1]
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the Slurm tests must run, but: {reason}")
        pytest.skip(reason)
    assert up.returncode == 0, f"single_node.sh up failed:\n{up.stdout}\n{up.stderr}"
    started = up.stdout.rsplit("started:", 1)[-1].split()
    try:
        names = slurm("sinfo", "-h", "-o", "%P").split()
        defaults = [p.rstrip("*") for p in names if p.endswith("*")]
        assert defaults, "the cluster has no default partition"
        yield defaults[0]
    finally:
        if started:  # only what this fixture started; a reused cluster keeps running
            down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
            assert down.returncode == 0, f"single_node.sh down failed:\n{down.stderr}"


def site_profile(folder: Path, partition: str) -> Path:
    """The shipped profile with one site setting made: the partition."""
    text = PROFILE.read_text(encoding="utf-8")
    keys = re.findall(r"^([\w-]+):", text, re.M)
    assert len(keys) == len(set(keys)), f"a key appears twice in {PROFILE}: {keys}"
    profile = yaml.safe_load(text)
    profile["default-resources"]["slurm_partition"] = partition
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile), encoding="utf-8")
    return folder


def snakemake_cmd(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--profile", str(workdir / "profile")]  # fmt: skip


def venv_env() -> dict[str, str]:
    """This venv first on PATH; sbatch passes the whole environment on to the jobs."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def render_processes(workdir: Path) -> list[psutil.Process]:
    """`lipbench render-chunk` processes working in `workdir`, wherever they were started."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "render-chunk" in (p.info["cmdline"] or []) and p.cwd() == str(workdir):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def run_jobs(run_id: str) -> dict[str, str]:
    """SLURM job id → state, for the jobs of one Snakemake run (named by its run id)."""
    out = slurm("squeue", "--states=all", "-h", "-o", "%i|%T", "--name", run_id)
    return dict(line.split("|") for line in out.split())


@dataclass
class Run:
    workdir: Path
    partition: str
    interrupted_at: float = 0.0
    interrupted_rc: int | None = None
    interrupted_log: str = ""
    renders_at_interrupt: list[int] = field(default_factory=list)
    renders_left: list[int] = field(default_factory=list)
    cancelled_jobs: dict[str, str] = field(default_factory=dict)
    log: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def job_dir(self) -> Path:
        return self.workdir / "results" / JOB

    def record(self) -> dict:
        return json.loads((self.job_dir / "run.json").read_text())


def interrupt_while_rendering(run: Run) -> None:
    """Start the workflow, and once the chunk processes run, SIGINT Snakemake's whole process
    group (what Ctrl-C in a terminal does). The chunk processes are not in that group: they
    run under slurmd, so only Snakemake's own cancellation can end them."""
    log_path = run.workdir / "interrupted.log"
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(snakemake_cmd(run.workdir), cwd=run.workdir, env=venv_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 400
            while proc.poll() is None and time.monotonic() < deadline:
                renders = render_processes(run.workdir)
                if renders:
                    run.renders_at_interrupt = [p.pid for p in renders]
                    break
                time.sleep(0.5)
            run.seconds["to_first_render"] = round(time.monotonic() - t0, 1)
            time.sleep(1)
            run.interrupted_at = time.time()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            run.interrupted_rc = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    run.seconds["interrupt_to_exit"] = round(time.time() - run.interrupted_at, 1)
    run.interrupted_log = log_path.read_text()
    # Anything still rendering gets 30 s to go (slurmd signals the job steps on scancel).
    deadline = time.monotonic() + 30
    while render_processes(run.workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    run.renders_left = [p.pid for p in render_processes(run.workdir)]
    for p in render_processes(run.workdir):  # leave nothing behind for the rerun
        p.kill()
    run_id = re.search(r"SLURM run ID: (\S+)", run.interrupted_log)
    run.cancelled_jobs = run_jobs(run_id[1]) if run_id else {}
    # squeue lists a cancelled job as COMPLETING until slurmd has cleaned up after it (seconds
    # on a loaded machine): wait for the state it ends in
    deadline = time.monotonic() + 60
    while "COMPLETING" in run.cancelled_jobs.values() and time.monotonic() < deadline:
        time.sleep(0.5)
        run.cancelled_jobs = run_jobs(run_id[1])


@pytest.fixture(scope="module")
def run(partition, tmp_path_factory) -> Run:
    """Interrupted once while the two chunk jobs render, then run again to completion."""
    workdir = tmp_path_factory.mktemp("slurm") / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    site_profile(workdir / "profile", partition)
    r = Run(workdir, partition)
    interrupt_while_rendering(r)
    assert r.renders_at_interrupt, "no chunk ever rendered:\n" + r.interrupted_log[-4000:]
    t0 = time.monotonic()
    proc = subprocess.run(snakemake_cmd(workdir), cwd=workdir, env=venv_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    r.seconds["rerun"] = round(time.monotonic() - t0, 1)
    r.log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the rerun failed ({proc.returncode}):\n{r.log[-4000:]}"
    return r


def test_ctrl_c_ends_the_chunk_jobs(run):
    assert run.interrupted_rc not in (None, 0), "Snakemake did not stop on SIGINT"
    assert "Terminating processes on user request" in run.interrupted_log
    assert run.renders_left == [], "render-chunk outlived the interrupted run"
    assert run.cancelled_jobs, "the interrupted run's SLURM jobs were not found"
    states = set(run.cancelled_jobs.values())
    assert states <= {"COMPLETED", "CANCELLED"}, run.cancelled_jobs
    assert "CANCELLED" in states


def test_result_matches_the_record(run):
    rec = run.record()
    plan = json.loads((run.job_dir / "plan.json").read_text())
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(run.job_dir / "result.mp4"))
    assert frames == rec["frames"] == plan["n_frames"] > 0
    assert abs(secs - rec["audio_duration_s"]) <= 1 / rec["fps"] + 1e-6
    banner = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i",
                             str(run.job_dir / "result.mp4")], capture_output=True, text=True)  # fmt: skip
    assert re.search(r"Stream #.*Audio:", banner.stderr), "result.mp4 has no audio"
    assert rec["strategy"] == "parallel" and rec["engine"] == "snakemake"
    assert rec["device"] == "cpu"
    assert [c["model"] for c in rec["chunks"]] == ["gan", "nogan"]
    assert sum(c["frames"] for c in rec["chunks"]) == frames
    assert rec["tts"]["engine"] == "piper"
    for stage in ("tts", "convert", "split", "infer", "merge", "total"):
        assert rec["timings"][stage] > 0, stage


def test_each_chunk_ran_as_its_own_slurm_job(run):
    """Threads come from the rule (cores ÷ models here), no GPU is asked for on a CPU config,
    and every chunk job records when it was submitted, started and ran."""
    rec = run.record()
    threads = max(1, (os.cpu_count() or 1) // 2)  # 2 models share the node's cores
    infos = [json.loads((run.job_dir / "benchmarks" / f"infer_chunk_{k}.job.json").read_text())
             for k in range(2)]  # fmt: skip
    ids = [str(i["slurm_job_id"]) for i in infos]
    assert len(set(ids)) == 2 and not set(ids) & set(run.cancelled_jobs), ids
    for k, (info, chunk) in enumerate(zip(infos, rec["chunks"], strict=True)):
        assert chunk["threads"] == threads, k
        assert info["submit_ts"] <= info["slurm_start_ts"] <= info["step_start_ts"] + 1
        assert info["step_start_ts"] <= chunk["start_ts"] <= chunk["end_ts"] <= info["step_end_ts"]
        assert chunk["start_ts"] > run.interrupted_at, "a chunk from the interrupted run"
        job = slurm("scontrol", "show", "job", "-o", str(info["slurm_job_id"]))
        assert f"Partition={run.partition} " in job
        assert f"NumCPUs={threads} " in job, job
        assert "gpu" not in job.split("TRES=", 1)[1].split()[0], job


def test_a_rerun_after_ctrl_c_leaves_nothing_incomplete(run):
    incomplete = run.workdir / ".snakemake" / "incomplete"
    assert not incomplete.is_dir() or not any(incomplete.iterdir())
    assert not list((run.job_dir / "chunks").glob(".*")), "temp files left in chunks/"
    for k in range(2):  # the chunks' benchmarks are this run's, not the interrupted one's
        tsv = run.job_dir / "benchmarks" / f"infer_chunk_{k}.tsv"
        assert tsv.stat().st_mtime > run.interrupted_at


def test_every_step_logs_something_useful(run):
    logs = {p.name: p.read_text() for p in (run.job_dir / "logs").glob("*.log")}
    assert set(logs) == {"tts.log", "convert.log", "plan.log", "infer_chunk_0.log",
                         "infer_chunk_1.log", "merge.log"}  # fmt: skip
    empty = [name for name, text in logs.items() if not text.strip()]
    assert not empty, f"empty logs: {empty}"
    assert '"engine": "piper"' in logs["tts.log"] and "SLURM job " in logs["tts.log"]
    for k in range(2):
        assert re.search(r"SLURM job \d+", logs[f"infer_chunk_{k}.log"])
        assert '"frames"' in logs[f"infer_chunk_{k}.log"]
