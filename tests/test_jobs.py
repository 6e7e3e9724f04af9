"""lipbench.jobs: the one place a job is resolved (no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lipbench.errors import InputError
from lipbench.jobs import (
    frame_label,
    model_seed,
    output_names,
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


def test_output_names_derive_from_out(tmp_path):
    names = output_names(tmp_path / "d" / "talk.mp4")
    assert names.video.name == "talk.mp4"
    assert names.record.name == "talk.run.json"
    assert names.side.name == "talk.files" and names.audio.parent == names.side
    with pytest.raises(InputError, match="must end in .mp4"):
        output_names(tmp_path / "talk.avi")


def test_jobs_imports_no_torch_or_numpy():
    """The Snakefile imports lipbench.jobs on every parse: it must stay light."""
    code = "import sys, lipbench.jobs; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
