"""Bounded job storage: oldest removed first; on start, complete folders re-indexed."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_fakes import BASE, TINY_MP4, FakeWorkbench, jobs_dir

from lipbench import server
from lipbench.errors import InputError

# --- storage --------------------------------------------------------------------------------


def _store_job(store: server.JobStore, payload: bytes) -> str:
    job_id = hashlib.md5(payload).hexdigest()
    names = store.names(job_id)
    names.side.mkdir(parents=True)
    names.audio.write_bytes(payload)
    names.video.write_bytes(TINY_MP4)
    names.record.write_text("{}")
    store.add(job_id, "sequential", None)
    return job_id


def test_storage_bounds_remove_the_oldest_first(tmp_path):
    store = server.JobStore(tmp_path, max_jobs=3, max_bytes=10**9)
    store.open()
    ids = [_store_job(store, bytes([i]) * 10) for i in range(5)]
    assert [store.get(i) is not None for i in ids] == [False, False, True, True, True]
    assert not store.folder(ids[0]).exists() and store.folder(ids[4]).exists()
    assert store.stats()["removed"] == 2

    big = server.JobStore(tmp_path / "b", max_jobs=100, max_bytes=5000)
    big.open()
    first = _store_job(big, b"a" * 2000)
    pinned = _store_job(big, b"b" * 2000)
    big.pin(pinned)
    third = _store_job(big, b"c" * 2000)  # over 5000 bytes: the oldest unpinned goes
    assert big.get(first) is None and big.get(pinned) and big.get(third)
    assert big.stats()["bytes"] <= 5000
    huge = _store_job(big, b"d" * 9000)  # alone over the bound: still kept (just made)
    assert big.get(huge) and big.get(pinned) and big.get(third) is None
    big.unpin(pinned)
    with pytest.raises(InputError, match="storage policy"):
        big.pin(first)


def test_restart_reindexes_complete_jobs_and_removes_the_rest(fake_cfg):
    def app() -> Any:
        return server.create_app(fake_cfg, workbench=FakeWorkbench(fake_cfg), warmup=False)

    with TestClient(app(), base_url=BASE) as client:
        kept = [client.post("/api/generate", json={"text": f"Hi {i}"}).json() for i in range(2)]
    root = jobs_dir(fake_cfg)
    partial = root / ("cd" * 16)  # a job that crashed before its files were published
    (partial / ".result.staging-1234").mkdir(parents=True)
    (root / ".warmup-parallel").mkdir()
    foreign = root / "notes.txt"
    foreign.write_text("mine")
    with TestClient(app(), base_url=BASE) as client:
        for res in kept:  # ids, videos and audio of the earlier run keep working
            assert client.get(res["video_url"]).content == TINY_MP4
            again = client.post("/api/generate", json={"audio_id": res["audio_id"]})
            assert again.json()["audio_sha256"] == res["audio_sha256"]
        assert client.get("/api/info").json()["storage"]["jobs"] == 4
    assert not partial.exists() and not (root / ".warmup-parallel").exists()
    assert foreign.read_text() == "mine"


def test_storage_policy_through_the_api(tmp_path, make_config):
    cfg = make_config(tmp_path, server={"storage": {"max_jobs": 2}})
    with TestClient(server.create_app(cfg, workbench=FakeWorkbench(cfg), warmup=False),
                    base_url=BASE) as client:  # fmt: skip
        made = [client.post("/api/generate", json={"text": f"n{i}"}).json() for i in range(3)]
        assert client.get(made[0]["video_url"]).status_code == 404
        assert all(client.get(m["video_url"]).status_code == 200 for m in made[1:])
    assert sorted(p.name for p in jobs_dir(cfg).iterdir()) == sorted(m["id"] for m in made[1:])
