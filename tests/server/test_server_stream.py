"""Stream mode with the stand-in workbench (which writes a small real HLS stream): start →
the playlist is "not ready" → ready (served from the live staging folder) → segments →
done (published folder, closed playlist, the result); strict file names; the Host rule; the
queue's limits; what cancels a stream job (DELETE, nobody watching); failures; OpenAPI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_fakes import (
    BASE,
    TINY_MP4,
    CancellableWorkbench,
    FakeWorkbench,
    jobs_dir,
    real_segments,
)

from lipbench import server
from lipbench.errors import InputError
from lipbench.server.schemas import ErrorBody, StreamStatus

HLS_VERSION = "1.7.4"  # static/vendor/hls.min.js (see static/vendor/README.md)
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


def _until(cond: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _status(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    r = client.get(job["status_url"])
    assert r.status_code == 200, r.text
    return r.json()


def _wait_state(client: TestClient, job: dict[str, Any], *states: str) -> dict[str, Any]:
    return _until(lambda: (s := _status(client, job))["state"] in states and s)


def _make_client(cfg: dict[str, Any], wb: FakeWorkbench) -> Iterator[TestClient]:
    app = server.create_app(cfg, workbench=wb, warmup=False)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield client
    wb.gate.set()
    wb.first_gate.set()


@pytest.fixture
def held(fake_cfg) -> Iterator[tuple[TestClient, FakeWorkbench]]:
    """A client whose jobs wait before their first segment and again after it."""
    wb = FakeWorkbench(fake_cfg, gated=True)
    wb.first_gate.clear()
    for client in _make_client(fake_cfg, wb):
        yield client, wb


@pytest.fixture
def held_cancellable(fake_cfg) -> Iterator[tuple[TestClient, CancellableWorkbench]]:
    wb = CancellableWorkbench(fake_cfg, gated=True)
    for client in _make_client(fake_cfg, wb):
        yield client, wb


def _start(client: TestClient, path: str = "/api/stream/generate_parallel",
           **body: Any) -> dict[str, Any]:  # fmt: skip
    r = client.post(path, json=body or {"text": "Hello there", "chunks": 2})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == job["status_url"] == f"/api/stream/jobs/{job['id']}"
    return job


# --- the life of a stream job ----------------------------------------------------------------


def test_stream_job_from_start_to_done(held, fake_cfg):
    client, wb = held
    t_before = time.time()
    job = _start(client)
    assert len(job["id"]) == 32 and int(job["id"], 16) >= 0
    assert job["playlist_url"] == f"/streams/{job['id']}/index.m3u8"
    assert job["strategy"] == "parallel" and job["state"] in ("queued", "running")

    # running, no segment yet: the playlist is "not ready", and says what to do
    running = _wait_state(client, job, "running")
    assert running["playable"] is False and running["result"] is None
    r = client.get(job["playlist_url"])
    assert r.status_code == 404 and r.headers["retry-after"] == "1"
    assert "not ready yet" in r.json()["detail"] and "playable" in r.json()["fix"]
    call = wb.calls[0]
    assert call["stream"] is True and call["chunks"] == 2 and callable(call["on_stream"])
    origin_ts, origin = call["origin"]
    assert origin == "request" and t_before <= origin_ts <= time.time()

    # the first segment is listed: playable, served from the live staging folder
    wb.first_gate.set()
    assert _until(lambda: _status(client, job)["playable"])
    staging = next(jobs_dir(fake_cfg).joinpath(job["id"]).glob(".result.staging-*"))
    r = client.get(job["playlist_url"])
    assert r.status_code == 200 and r.headers["content-type"] == PLAYLIST_TYPE
    assert r.headers["cache-control"] == "no-store"
    assert "chunk_000/seg_00000.ts" in r.text and "#EXT-X-ENDLIST" not in r.text
    seg = client.get(f"/streams/{job['id']}/chunk_000/seg_00000.ts")
    assert seg.status_code == 200 and seg.headers["content-type"] == "video/mp2t"
    assert seg.content == real_segments()[0] and seg.content[0] == 0x47  # TS sync byte
    # on disk but not listed yet (ffmpeg may still be writing such a file): not served
    assert (staging / "result.files/stream/chunk_001/seg_00000.ts").is_file()
    assert client.get(f"/streams/{job['id']}/chunk_001/seg_00000.ts").status_code == 404
    assert _status(client, job)["state"] == "running"

    # done: the result, the published (closed) stream, the video
    wb.gate.set()
    done = _wait_state(client, job, "done")
    StreamStatus.model_validate(done)
    res = done["result"]
    assert res["id"] == job["id"] and res["video_url"] == f"/videos/{job['id']}.mp4"
    assert res["timings"]["first_playable_s"] == 0.5 and res["timings"]["stall_s"] == 0.25
    assert res["timings"]["total"] == 1.4 and res["latency_origin"] == "request"
    assert res["stream"]["ready_s"] == [0.5, 1.75]
    assert done["error"] is None and done["playable"] is True
    assert client.get(res["video_url"]).content == TINY_MP4
    assert not staging.exists()  # moved into place
    r = client.get(job["playlist_url"])
    assert r.status_code == 200 and r.text.rstrip().endswith("#EXT-X-ENDLIST")
    for i, uri in enumerate(("chunk_000/seg_00000.ts", "chunk_001/seg_00000.ts")):
        assert client.get(f"/streams/{job['id']}/{uri}").content == real_segments()[i]
    q = client.get("/api/health").json()["queue"]
    assert q["running"] == 0 and q["waiting"] == 0 and q["completed"] == 1


def test_stream_renders_an_earlier_jobs_wav(fake_client, fake_wb, fake_cfg):
    """The page's Compare: the first job synthesises, the other strategy renders its WAV."""
    first = _start(fake_client)
    res = _wait_state(fake_client, first, "done")["result"]
    again = _start(fake_client, "/api/stream/generate", audio_id=res["audio_id"])
    res2 = _wait_state(fake_client, again, "done")["result"]
    assert fake_wb.calls[1]["text"] is None
    assert Path(fake_wb.calls[1]["audio"]) == jobs_dir(fake_cfg) / first["id"] / "result.files" / "audio.wav"  # fmt: skip
    assert res2["audio_sha256"] == res["audio_sha256"] and res2["audio_from"] == first["id"]
    assert res2["strategy"] == "sequential"
    gone = fake_client.post("/api/stream/generate", json={"audio_id": "0" * 32})
    assert gone.status_code == 422 and gone.json()["errors"][0]["field"] == "audio_id"
    assert len(fake_wb.calls) == 2


def test_finished_stream_survives_a_restart(fake_cfg, fake_wb):
    """The stream of a stored job stays servable by id after the in-memory job is gone, and
    its status URL answers from the store (it was 404 while the video played)."""
    app = server.create_app(fake_cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url=BASE) as client:
        job = _start(client)
        before = _wait_state(client, job, "done")
    app = server.create_app(fake_cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url=BASE) as client:
        r = client.get(job["playlist_url"])
        assert r.status_code == 200 and "#EXT-X-ENDLIST" in r.text
        after = _status(client, job)  # no job in memory: rebuilt from the store
        StreamStatus.model_validate(after)
        assert after["state"] == "done" and after["playable"] and after["error"] is None
        for key in ("id", "video_url", "audio_id", "audio_sha256", "strategy", "timings", "stream"):
            assert after["result"][key] == before["result"][key], key
        assert client.get(after["result"]["video_url"]).status_code == 200
        gone = client.delete(job["status_url"])  # an ended job is left as it is
        assert gone.status_code == 200 and gone.json()["state"] == "done"
        plain = client.post("/api/generate", json={"text": "Hi"}).json()
        assert client.get(f"/api/stream/jobs/{plain['id']}").status_code == 404  # not a stream


# --- names, ids, hosts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "chunk_000/segments.csv",  # exists on disk, not a stream file
        "chunk_0/seg_00000.ts",
        "chunk_000/seg_0.ts",
        "chunk_000/seg_00000.mp4",
        "CHUNK_000/seg_00000.ts",
        "index.m3u8.tmp",
        "index.m3u8%00",
        "..%2Fjob.json",
        "..%2Fresult.run.json",
        "chunk_000%2F..%2F..%2F..%2Fjob.json",
        "%2e%2e/%2e%2e/result.mp4",
        "%2Fetc%2Fpasswd",
        "chunk_000/seg_00009.ts",  # well-formed, planted, not listed
        "stream/index.m3u8",
        "",
    ],
)
def test_only_listed_stream_files_are_served(fake_client, fake_cfg, name):
    job = _start(fake_client)
    _wait_state(fake_client, job, "done")
    stream = jobs_dir(fake_cfg) / job["id"] / "result.files" / "stream"
    (stream / "chunk_000" / "seg_00009.ts").write_bytes(b"planted")
    (stream / "chunk_000" / "segments.csv").write_text("seg_00000.ts,0,1\n")
    r = fake_client.get(f"/streams/{job['id']}/{name}")
    assert r.status_code == 404, name
    assert r.json()["detail"] and r.json()["fix"]
    assert fake_client.get(job["playlist_url"]).status_code == 200  # the real one is served


@pytest.mark.parametrize(
    "url",
    [
        "/streams/" + "0" * 32 + "/index.m3u8",  # well-formed, unknown
        "/streams/" + "AB" * 16 + "/index.m3u8",  # ids are lower-case hex
        "/streams/..%2F..%2Fserver/index.m3u8",
        "/streams/x/index.m3u8",
        "/api/stream/jobs/" + "0" * 32,
        "/api/stream/jobs/..%2F..%2Fetc",
    ],
)
def test_unknown_stream_ids_are_404(fake_client, url):
    r = fake_client.get(url)
    assert r.status_code == 404 and r.json()["fix"]
    assert fake_client.delete("/api/stream/jobs/" + "0" * 32).status_code == 404


def test_stream_of_a_plain_job_is_404(fake_client):
    made = fake_client.post("/api/generate", json={"text": "Hello"}).json()
    assert fake_client.get(f"/streams/{made['id']}/index.m3u8").status_code == 404


@pytest.mark.parametrize("host", ["rebind.attacker.test", "localhost.evil", ""])
def test_foreign_host_is_refused_on_stream_routes(fake_client, fake_wb, host):
    job = _start(fake_client)
    _wait_state(fake_client, job, "done")
    h = {"host": host}
    assert fake_client.post("/api/stream/generate", json={"text": "Hi"}, headers=h).status_code == 400  # fmt: skip
    for url in (job["playlist_url"], f"/streams/{job['id']}/chunk_000/seg_00000.ts",
                job["status_url"]):  # fmt: skip
        r = fake_client.get(url, headers=h)
        assert r.status_code == 400 and "allowed_hosts" in r.json()["fix"]
    assert fake_client.delete(job["status_url"], headers=h).status_code == 400
    assert len(fake_wb.calls) == 1


# --- the queue and cancelling ------------------------------------------------------------------


def test_stream_jobs_share_the_queue_and_its_limits(held):
    """max_running 1, max_waiting 1: a running and a queued stream job fill it; the next start,
    stream or not, is 429 with Retry-After, before any job is made."""
    client, wb = held
    one = _start(client)
    _wait_state(client, one, "running")
    two = _start(client, "/api/stream/generate", text="two")
    assert _status(client, two)["state"] == "queued"
    for path in ("/api/stream/generate", "/api/generate"):
        r = client.post(path, json={"text": "three"})
        assert r.status_code == 429 and "queue is full" in r.json()["detail"]
        assert int(r.headers["Retry-After"]) == r.json()["retry_after_s"] >= 1
    assert len(wb.calls) == 1  # the queued job has not started
    wb.first_gate.set()
    wb.gate.set()
    assert _wait_state(client, one, "done", "failed")["state"] == "done"
    assert _wait_state(client, two, "done", "failed")["state"] == "done"
    assert [c["text"] for c in wb.calls] == ["Hello there", "two"]  # one after the other


def test_delete_cancels_a_running_stream_job(held_cancellable, fake_cfg):
    client, wb = held_cancellable
    job = _start(client)
    assert _until(lambda: _status(client, job)["playable"])
    r = client.delete(job["status_url"])
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert "cancelled by its client" in r.json()["error"]["detail"]
    # stopped at its next 'batch' (the gate is still closed): the slot frees, files go
    _until(lambda: client.get("/api/health").json()["queue"]["running"] == 0)
    assert wb.cancel_seen() and wb.finished == []
    _until(lambda: not (jobs_dir(fake_cfg) / job["id"]).exists())
    r = client.get(job["playlist_url"])
    assert r.status_code == 404 and "cancelled" in r.json()["detail"]
    again = client.delete(job["status_url"])  # a job that has ended is left as it is
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    wb.gate.set()
    nxt = _start(client, "/api/stream/generate", text="next")
    assert _wait_state(client, nxt, "done")["result"]["strategy"] == "sequential"


def test_delete_of_a_queued_stream_job_means_it_never_runs(held):
    client, wb = held
    one = _start(client)
    _wait_state(client, one, "running")
    two = _start(client, "/api/stream/generate", text="never")
    assert client.delete(two["status_url"]).json()["state"] == "cancelled"
    q = client.get("/api/health").json()["queue"]
    assert q["waiting"] == 0 and q["cancelled"] == 1
    wb.first_gate.set()
    wb.gate.set()
    _wait_state(client, one, "done")
    assert [c["text"] for c in wb.calls] == ["Hello there"]


def test_a_stream_nobody_watches_is_cancelled(held_cancellable, fake_cfg):
    """The page was closed: no status poll, no playlist reload → cancelled after the idle
    time, the job stopped and its files removed."""
    client, wb = held_cancellable
    streams = client.app.state.lipbench.streams
    streams.idle_cancel_s = 0.6
    job = _start(client)
    mem = streams.get(job["id"])  # read in memory: an HTTP status would count as watching
    _until(lambda: mem.state == "cancelled", timeout=10)
    assert "nobody asked about it" in mem.error["detail"]
    _until(lambda: client.get("/api/health").json()["queue"]["running"] == 0)
    _until(lambda: not (jobs_dir(fake_cfg) / job["id"]).exists())
    assert wb.finished == []


def test_a_watched_stream_is_not_cancelled(held):
    client, wb = held
    client.app.state.lipbench.streams.idle_cancel_s = 0.6
    job = _start(client)
    deadline = time.monotonic() + 1.5  # well past the idle time, polling all along
    while time.monotonic() < deadline:
        assert _status(client, job)["state"] in ("queued", "running")
        time.sleep(0.1)
    wb.first_gate.set()
    wb.gate.set()
    assert _wait_state(client, job, "done", "cancelled")["state"] == "done"


@pytest.mark.parametrize(
    ("error", "status", "needle"),
    [
        (InputError("no face found", "use another image"), 422, "no face found"),
        (RuntimeError("secret internals"), 500, "internal server error (RuntimeError)"),
    ],
)
def test_a_failed_stream_job_reports_its_error(fake_client, fake_wb, fake_cfg, error, status,
                                               needle):  # fmt: skip
    fake_wb.error = error
    job = _start(fake_client)
    done = _wait_state(fake_client, job, "failed", "done")
    assert done["state"] == "failed" and done["error_status"] == status
    assert needle in done["error"]["detail"] and done["error"]["fix"]
    assert "secret internals" not in str(done)
    ErrorBody.model_validate(done["error"])
    assert not (jobs_dir(fake_cfg) / job["id"]).exists()
    assert fake_client.get(job["playlist_url"]).status_code == 404


def test_stream_start_validates_like_generate(fake_client, fake_wb):
    r = fake_client.post("/api/stream/generate", json={"text": "hi", "chunks": 2})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "chunks"
    r = fake_client.post("/api/stream/generate_parallel", json={"text": "hi\x00"})
    assert r.status_code == 422 and "control character" in r.json()["detail"]
    assert not fake_wb.calls


# --- docs and the vendored player --------------------------------------------------------------


def test_openapi_documents_the_stream_routes(fake_client):
    spec = fake_client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/stream/generate", "/api/stream/generate_parallel"):
        op = paths[path]["post"]
        assert {"202", "413", "422", "429"} <= set(op["responses"])
        assert op["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("StreamStarted")  # fmt: skip
    jobs = paths["/api/stream/jobs/{job_id}"]
    assert {"get", "delete"} <= set(jobs) and "422" not in jobs["get"]["responses"]
    files = paths["/streams/{job_id}/{name}"]["get"]
    assert set(files["responses"]["200"]["content"]) == {PLAYLIST_TYPE, "video/mp2t"}
    assert [p["name"] for p in files["parameters"]] == ["job_id", "name"]
    assert "422" not in files["responses"]
    # each documented 404 is the real error body
    for resp in (fake_client.get("/api/stream/jobs/" + "0" * 32),
                 fake_client.get("/streams/" + "0" * 32 + "/index.m3u8")):  # fmt: skip
        assert resp.status_code == 404
        ErrorBody.model_validate(resp.json())
    ref = files["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ErrorBody")


def test_vendored_hls_js_is_served_with_its_licence(fake_client):
    page = fake_client.get("/parallel_test").text
    assert 'src="/static/vendor/hls.min.js"' in page
    js = fake_client.get("/static/vendor/hls.min.js")
    assert js.status_code == 200 and f'"{HLS_VERSION}"' in js.text
    lic = fake_client.get("/static/vendor/hls.js.LICENSE")
    assert lic.status_code == 200 and "Apache License" in lic.text
