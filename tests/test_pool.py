"""The replica pool: a replica killed mid-chunk is retried once on a fresh replica; a second
death fails the job cleanly, and the pool is whole again for the next job."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lipbench.pool import ChunkFailed
from lipbench.request import Hooks


def two_chunks(workbench, speech_wav, out, should_stop=None):
    """A two-chunk parallel job on two GAN replicas."""
    return workbench.generate(workbench.request(
        out, audio=speech_wav, strategy="parallel", models=["gan", "gan"], chunks=2,
        progress=False, hooks=Hooks(should_stop=should_stop)))  # fmt: skip


def test_replica_killed_mid_chunk_is_retried(workbench, speech_wav, session_dir):
    pool = workbench.pool(["gan", "gan"])
    killed: list[int] = []

    def kill_first(kind: str, data: dict) -> None:
        if kind == "started" and data["chunk"] == 1 and not killed:
            killed.append(data["pid"])
            os.kill(data["pid"], signal.SIGKILL)

    pool.on_event = kill_first
    try:
        rec = two_chunks(workbench, speech_wav, session_dir / "retry" / "result.mp4").to_dict()
    finally:
        pool.on_event = None
    assert killed and rec["restarts"] >= 1
    assert (session_dir / "retry" / "result.mp4").exists()
    assert rec["chunks"][1]["attempts"] == 2


def test_replica_dying_twice_fails_cleanly(workbench, speech_wav, session_dir):
    pool = workbench.pool(["gan", "gan"])

    def always_kill(kind: str, data: dict) -> None:
        if kind == "started" and data["chunk"] == 0:
            os.kill(data["pid"], signal.SIGKILL)

    pool.on_event = always_kill
    out = session_dir / "doomed"
    try:
        with pytest.raises(ChunkFailed, match="chunk 0"):
            two_chunks(workbench, speech_wav, out / "result.mp4").to_dict()
    finally:
        pool.on_event = None
    assert not (out / "result.mp4").exists()
    assert not out.exists() or not any(out.iterdir())  # nothing published, no staging left
    assert not list(Path(out).glob("**/*.part*"))
    # the pool still works afterwards
    rec = two_chunks(workbench, speech_wav, session_dir / "after" / "result.mp4").to_dict()
    assert rec["frames"] > 0


def test_should_stop_cancels_at_the_next_tick_and_keeps_replicas_warm(
    workbench, speech_wav, tmp_path
):
    """A job whose caller goes away (the server's client) stops within a few frames; nothing
    is published and the same replica processes serve the next job."""
    from lipbench.pool import Cancelled

    pool = workbench.pool(["gan", "gan"])
    pids = pool.pids()
    started: list[int] = []
    pool.on_event = lambda kind, data: started.append(data["chunk"]) if kind == "started" else None
    out = tmp_path / "gone" / "result.mp4"
    try:
        with pytest.raises(Cancelled, match="cancelled"):
            two_chunks(workbench, speech_wav, out, should_stop=lambda: bool(started))
    finally:
        pool.on_event = None
    assert not out.parent.exists() or not any(out.parent.iterdir())
    assert pool.pids() == pids  # no replica was killed or replaced
    rec = two_chunks(workbench, speech_wav, tmp_path / "next" / "result.mp4")
    assert pool.pids() == pids and rec.frames > 0
