"""lipbench.chunk: the workflow's unit of work, called from Python."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from lipbench import audio
from lipbench.chunk import load_sidecar, render_plan_chunk, sidecar_paths
from lipbench.errors import LipbenchError
from lipbench.plan import plan_audio
from lipbench.request import Settings
from lipbench.video import count_frames


@pytest.fixture(scope="module")
def settings(cfg) -> Settings:
    return Settings.from_config(cfg)


@pytest.fixture(scope="module")
def planned(cfg, speech_wav, tmp_path_factory):
    d = tmp_path_factory.mktemp("chunk")
    plan = plan_audio(
        audio.read_wav(speech_wav), Settings.from_config(cfg), ["gan", "nogan"], chunks=2
    )
    plan.save(d / "plan.json")
    return d, plan


@pytest.mark.slow
def test_render_one_chunk_writes_video_and_sidecars(settings, speech_wav, planned):
    d, plan = planned
    out = d / "1.mp4"
    row = render_plan_chunk(settings, speech_wav, d / "plan.json", 1, out, threads=1)
    c = plan.chunks[1]
    assert (row.chunk, row.model, row.frame_start, row.frame_end) == (
        1,
        "nogan",
        c.frame_start,
        c.frame_end,
    )
    assert count_frames(out)[0] == c.n_frames
    car = load_sidecar(out)
    assert car.row == row
    assert car.replica.model == "nogan" and car.replica.render.threads == 1
    assert car.replica.weights.source == "seeded-random"
    assert (
        car.edges["first"].shape == car.edges["last"].shape
        and len(car.edges["steps"]) == c.n_frames - 1
    )
    assert car.usage["n"] == len(car.usage["samples"]) and car.usage["t0"] <= row.start_ts
    assert all(p.exists() for p in sidecar_paths(out))


def test_chunk_outside_the_plan_is_refused_before_loading(settings, speech_wav, planned):
    d, _ = planned
    with pytest.raises(LipbenchError, match="chunk 5 not in the plan"):
        render_plan_chunk(settings, speech_wav, d / "plan.json", 5, d / "5.mp4")
    assert not (d / "5.mp4").exists()


def test_plan_for_other_audio_is_refused(settings, planned, tmp_path):
    d, _ = planned
    other = audio.write_wav16k(tmp_path / "other.wav", np.zeros(8000, np.float32))  # 0.5 s
    with pytest.raises(LipbenchError, match="re-run the plan step"):
        render_plan_chunk(settings, other, d / "plan.json", 0, tmp_path / "0.mp4", threads=1)
    assert not (tmp_path / "0.mp4").exists()


def test_process_start_is_read_to_a_clock_tick():
    """``first_frame_s`` counts from ``process_start_ts``: a child process must report a
    start between the moment it was launched and the moment it printed (psutil's
    create_time was early by the fraction of a second /proc/stat's boot time drops)."""
    code = "from lipbench.chunk import process_start_ts; print(repr(process_start_ts()))"
    before = time.time()
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # fmt: skip
    after = time.time()
    started = float(printed.stdout)
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert before - 2 * tick <= started <= after, (before, started, after)


def test_a_chunk_job_stamps_where_and_when_it_ran(monkeypatch):
    """render-chunk writes its own stamps (the record's placements): host, step start and
    end, and under SLURM the job id and its queue times read from squeue."""
    import subprocess as sp

    from lipbench import chunk

    outside = chunk.job_stamps(100.0)
    assert outside["slurm_job_id"] is None and outside["submit_ts"] is None
    assert outside["step_start_ts"] == 100.0 and outside["step_end_ts"] >= time.time() - 5
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    seen = {}

    def squeue(cmd, **kw):
        seen["cmd"] = cmd
        return sp.CompletedProcess(cmd, 0, "2026-12-06T05:00:00|2026-12-06T05:00:07\n", "")

    monkeypatch.setattr(sp, "run", squeue)
    inside = chunk.job_stamps(100.0)
    assert seen["cmd"][:4] == ["squeue", "-h", "-j", "42"]
    assert inside["slurm_job_id"] == 42 and inside["slurm_start_ts"] - inside["submit_ts"] == 7
