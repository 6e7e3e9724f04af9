"""lipbench.jobs: the one place a job is resolved (no torch)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lipbench import jobs
from lipbench.errors import InputError
from lipbench.jobs import (
    JobSettings,
    chunk_cuda_visible,
    frame_label,
    job_label,
    model_seed,
    nvidia_gpu_ids,
    replica_device,
    resolve_job,
    threads_per_replica,
    uses_gpu,
)


def test_sequential_is_one_model_one_chunk(cfg):
    job = resolve_job(cfg, "sequential", ["nogan", "gan"], chunks=3)
    assert job.models == ("nogan",) and job.chunks == 1
    assert resolve_job(cfg, "sequential").models == (cfg["sequential"]["model"],)


def test_parallel_models_and_one_chunk_on_a_full_replica(cfg):
    job = resolve_job(cfg, "parallel")
    assert job.models == tuple(cfg["parallel"]["models"]) and job.chunks is None
    assert job.replica_models(2) == job.models and not job.one_chunk_on_full_replica(2)
    assert job.replica_models(1) == job.models[:1] and job.one_chunk_on_full_replica(1)
    # with threads forced, a one-chunk job keeps its replicas as asked
    assert resolve_job(cfg, "parallel", threads=1).replica_models(1) == job.models


def test_threads_per_replica_splits_the_cores(cfg):
    assert threads_per_replica(1, cfg, cores=8) == 8
    assert threads_per_replica(2, cfg, cores=8) == 4
    assert threads_per_replica(3, cfg, cores=2) == 1
    job = resolve_job(cfg, "parallel", ["gan", "nogan"])
    assert job.threads_per_replica(cfg, 2, cores=8) == 4
    assert job.threads_per_replica(cfg, 1, cores=8) == 8  # one chunk → one full replica
    custom = {**cfg, "parallel": {**cfg["parallel"], "threads_per_replica": 3}}
    assert threads_per_replica(2, custom, cores=8) == 3


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"strategy": "fast"}, "unknown strategy"),
        ({"strategy": "parallel", "models": ["gan", "foo"]}, "'foo'"),
        ({"strategy": "parallel", "chunks": 0}, "--chunks must be > 0"),
        ({"strategy": "parallel", "chunks": -1}, "--chunks must be > 0"),
        ({"strategy": "sequential", "threads": 0}, "--threads must be > 0"),
        ({"strategy": "sequential", "threads": -1}, "--threads must be > 0"),
    ],
)
def test_bad_jobs_are_refused_with_the_flag_named(cfg, kwargs, needle):
    with pytest.raises(InputError, match=needle):
        resolve_job(cfg, **kwargs)


def test_label_seed_gpu(cfg):
    assert frame_label(True, cfg) is None and frame_label(False, cfg) == "untrained weights"
    off = {**cfg, "weights": {**cfg["weights"], "label_untrained": False}}
    assert frame_label(False, off) is None
    assert model_seed(0, "gan") != model_seed(0, "nogan") and model_seed(0, "gan") == model_seed(
        0, "gan"
    )
    assert uses_gpu({**cfg, "device": "cuda"}) and not uses_gpu({**cfg, "device": "auto"})


def test_the_job_label_is_decided_from_the_plans_checkpoints(cfg, tmp_path):
    """One label per job, the same on both paths: a trained GAN with an untrained NOGAN
    labels every frame of a two-chunk job, none of a job whose plan uses the GAN only."""
    (tmp_path / "g.pth").write_bytes(b"x")
    w = JobSettings.from_config({**cfg, "weights": {**cfg["weights"], "dir": str(tmp_path),
                                                    "files": {"gan": "g.pth", "nogan": "n.pth"}}}).weights  # fmt: skip
    assert w.trained("gan") and not w.trained("nogan")
    assert job_label(["gan", "nogan"], w) == "untrained weights"
    assert job_label(["gan"], w) is None
    assert job_label(["nogan"], dataclasses.replace(w, label_untrained=False)) is None


def test_threads_follow_the_plan_on_both_paths(cfg):
    """A one-chunk parallel plan renders on one replica with every core, in the pool and in
    the workflow's chunk job (both call Job.threads_per_replica with the plan's chunks)."""
    job = resolve_job(cfg, "parallel", ["gan", "nogan"])
    assert job.threads_per_replica(cfg, 1, cores=2) == 2 and job.one_chunk_on_full_replica(1)
    assert job.threads_per_replica(cfg, 2, cores=2) == 1 and not job.one_chunk_on_full_replica(2)


def test_jobs_imports_no_torch_or_numpy():
    """The Snakefile imports lipbench.jobs on every parse: it must stay light."""
    code = "import sys, lipbench.jobs; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- where replicas run: round-robin over GPUs (no GPU is needed: torch.cuda is faked) ---


def test_replicas_go_round_robin_over_several_gpus():
    assert [replica_device("cuda", i, 2) for i in range(4)] == ["cuda:0", "cuda:1"] * 2
    assert [replica_device("cuda", i, 3) for i in range(4)] == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
        "cuda:0",
    ]
    # one GPU, the CPU, or a GPU named explicitly: left as it is
    assert replica_device("cuda", 1, 1) == "cuda"
    assert replica_device("cpu", 1, 0) == "cpu" and replica_device("cuda:1", 0, 4) == "cuda:1"


def test_chunk_jobs_honour_cuda_visible_devices(monkeypatch):
    """A local chunk job gets one GPU named as CUDA_VISIBLE_DEVICES names it; with fewer
    than two visible, the variable is left alone (a Slurm job keeps what it was granted)."""
    assert nvidia_gpu_ids({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert nvidia_gpu_ids({"CUDA_VISIBLE_DEVICES": ""}) == []  # no GPU at all
    monkeypatch.setattr(jobs, "has_nvidia_driver", lambda: False)
    assert nvidia_gpu_ids({}) == []
    ids = ["GPU-aa", "GPU-bb", "GPU-cc"]
    assert [chunk_cuda_visible(k, ids) for k in range(4)] == [
        "GPU-aa",
        "GPU-bb",
        "GPU-cc",
        "GPU-aa",
    ]
    assert chunk_cuda_visible(3, ["7"]) is None and chunk_cuda_visible(0, []) is None


class _FakePool:
    """Stands in for ReplicaPool: keeps the specs, starts nothing."""

    def __init__(self, specs, in_process=False):
        self.specs = specs

    def replica_rows(self):
        return []

    def close(self):
        pass


@pytest.mark.parametrize(
    ("gpus", "devices"), [(2, ["cuda:0", "cuda:1", "cuda:0"]), (1, ["cuda"] * 3)]
)
def test_workbench_places_replicas_round_robin_on_cuda(cfg, monkeypatch, gpus, devices):
    import torch

    from lipbench import pipeline, pools

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(pools, "ReplicaPool", _FakePool)
    with pipeline.Workbench({**cfg, "device": "cuda"}) as wb:
        pool = wb.pool(["gan", "nogan", "gan"], threads=1)
    assert [s.device for s in pool.specs] == devices


def test_workbench_on_cpu_keeps_cpu(cfg, monkeypatch):
    from lipbench import pipeline, pools

    monkeypatch.setattr(pools, "ReplicaPool", _FakePool)
    with pipeline.Workbench({**cfg, "device": "cpu"}) as wb:
        assert [s.device for s in wb.pool(["gan", "nogan"], threads=1).specs] == ["cpu", "cpu"]


@pytest.mark.slow
def test_workflow_chunk_jobs_take_one_gpu_each(tmp_path):
    """Run the workflow up to the plan, then dry-run the chunk jobs with `device: cuda`
    where CUDA_VISIBLE_DEVICES lists two GPUs: chunk k's command exports the k-th (the
    chunk job then sees exactly that GPU as `cuda`); on the CPU nothing is exported."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    job = {"id": "t", "text": "Hello there, this is a short test.", "lang": "en",
           "strategy": "parallel", "chunks": 2}  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"jobs": [job]}))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "5,7",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    base = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(tmp_path),
            "--configfile", str(tmp_path / "config.yaml")]  # fmt: skip

    def smk(*args):
        p = subprocess.run(
            [*base, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        return p.stdout + p.stderr

    smk("--cores", "2", "--until", "plan")
    dry = smk("-n", "-p", "--config", "device=cuda")
    for k, gpu in ((0, "5"), (1, "7")):
        line = next(x for x in dry.splitlines() if f"--chunk {k} " in x)
        assert line.startswith(f"Shell command: export CUDA_VISIBLE_DEVICES={gpu}; ")
    assert "export CUDA_VISIBLE_DEVICES" not in smk("-n", "-p", "--config", "device=cpu")
