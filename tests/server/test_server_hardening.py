"""Issue 26 item 10 and issue 24's server parts: strict request types, one engine list, the
response as a typed view of the run record, no framing, half-sent requests timed out (a real
uvicorn on a raw socket), symbolic links never followed, byte ranges and HEAD on segments."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import socket
import threading
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from server_fakes import BASE, TINY_MP4, FakeWorkbench, LeasingWorkbench, jobs_dir, start_uvicorn

from lipbench import server, tts
from lipbench.record import RunRecord
from lipbench.server import middleware, schemas
from lipbench.server.connection import protocol_with_deadline
from lipbench.server.schemas import GenerateResponse
from lipbench.server.view import RECORD_FIELDS

# --- request and response types ----------------------------------------------------------------


@pytest.mark.parametrize("chunks", [True, "2", 2.0, 2.5])
def test_chunks_must_be_a_json_integer(fake_client, fake_wb, chunks):
    r = fake_client.post("/api/generate_parallel", json={"text": "Hi", "chunks": chunks})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["chunks"]
    assert fake_wb.calls == []


def test_a_json_integer_chunks_is_taken(fake_client, fake_wb):
    r = fake_client.post("/api/generate_parallel", json={"text": "Hi", "chunks": 2})
    assert r.status_code == 200, r.text
    assert fake_wb.calls[0]["chunks"] == 2


def test_engine_names_are_the_tts_modules(fake_client):
    schema = fake_client.get("/openapi.json").json()["components"]["schemas"]
    engine = schema["GenerateRequest"]["properties"]["engine"]
    enums = [alt["enum"] for alt in engine["anyOf"] if "enum" in alt]
    assert enums == [list(tts.ENGINES)]
    source = inspect.getsource(schemas)  # one definition: no second list of the names
    assert not [e for e in tts.ENGINES if f'"{e}"' in source]


def test_the_response_is_a_view_of_the_run_record():
    """Each record field the response carries has the record's own type (not a second
    declaration that can drift)."""
    hints = typing.get_type_hints(RunRecord)
    record_names = {f.name for f in dataclasses.fields(RunRecord)}
    assert set(RECORD_FIELDS) <= record_names
    for name in RECORD_FIELDS:
        assert GenerateResponse.model_fields[name].annotation == hints[name], name


def test_a_finished_job_answers_the_records_fields(fake_client, fake_cfg):
    res = fake_client.post("/api/generate", json={"text": "Hi"}).json()
    rec = RunRecord.from_dict(
        json.loads((jobs_dir(fake_cfg) / res["id"] / "result.run.json").read_text())
    )
    for name in RECORD_FIELDS:
        want = getattr(rec, name)
        want = dataclasses.asdict(want) if dataclasses.is_dataclass(want) else want
        if name == "weights":
            want = {m: dataclasses.asdict(w) for m, w in rec.weights.items()}
        if name == "chunks":
            want = [dataclasses.asdict(c) for c in rec.chunks]
        assert res[name] == want, name
    assert res["timings"]["total"] == rec.timings.total
    assert "latency_origin" not in res["timings"] and res["latency_origin"] == "request"


# --- framing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "host"),
    [("/parallel_test", None), ("/api/info", None), ("/videos/" + "0" * 32 + ".mp4", None),
     ("/static/app.js", None), ("/api/info", "evil.example")],
)  # fmt: skip
def test_no_response_may_be_framed(fake_client, path, host):
    headers = {"Host": host} if host else {}
    r = fake_client.get(path, headers=headers)
    assert r.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert r.headers["x-frame-options"] == "DENY"


# --- half-sent requests on a real server -------------------------------------------------------


@pytest.fixture
def live_fake(fake_cfg, monkeypatch) -> Iterator[int]:
    """uvicorn on an ephemeral port with the stand-in workbench, the deadlines short."""
    monkeypatch.setattr(middleware, "BODY_TIMEOUT_S", 0.5)
    app = server.create_app(fake_cfg, workbench=FakeWorkbench(fake_cfg), warmup=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            http=protocol_with_deadline(0.5))  # fmt: skip
    srv, thread, port = start_uvicorn(config)
    yield port
    srv.should_exit = True
    thread.join(30)


def _send_and_read(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes the connection (30 s at most)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got


def test_half_sent_headers_are_timed_out(live_fake):
    """The connection is closed (before: it stayed open for as long as the client liked)."""
    got = _send_and_read(live_fake, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: b")
    assert got == b""


def test_half_sent_body_is_408(live_fake):
    head = (b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: 100\r\nConnection: close\r\n\r\n")  # fmt: skip
    got = _send_and_read(live_fake, head + b'{"text": "H')
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"did not arrive" in got


def test_whole_requests_still_work(live_fake):
    got = _send_and_read(live_fake, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"Connection: close\r\n\r\n")  # fmt: skip
    assert got.startswith(b"HTTP/1.1 200 ")


# --- symbolic links --------------------------------------------------------------------------


def _restart(cfg: dict[str, Any], wb: FakeWorkbench) -> TestClient:
    return TestClient(server.create_app(cfg, workbench=wb, warmup=False), base_url=BASE)


def test_a_linked_video_is_never_indexed_or_served(fake_cfg, fake_wb, tmp_path):
    with _restart(fake_cfg, fake_wb) as client:
        res = client.post("/api/generate", json={"text": "Hi"}).json()
        assert client.get(res["video_url"]).status_code == 200
    secret = tmp_path / "outside.mp4"
    secret.write_bytes(TINY_MP4 + b"secret")
    video = jobs_dir(fake_cfg) / res["id"] / "result.mp4"
    video.unlink()
    video.symlink_to(secret)
    with _restart(fake_cfg, fake_wb) as client:
        assert client.get(res["video_url"]).status_code == 404
        r = client.post("/api/generate", json={"audio_id": res["audio_id"]})
        assert r.status_code == 422  # not indexed: its audio is gone too
    assert secret.read_bytes().endswith(b"secret")  # the target is never touched


def test_a_linked_job_folder_is_left_alone(fake_cfg, fake_wb, tmp_path):
    with _restart(fake_cfg, fake_wb) as client:
        res = client.post("/api/generate", json={"text": "Hi"}).json()
    real = tmp_path / "elsewhere"
    (jobs_dir(fake_cfg) / res["id"]).rename(real)
    link = jobs_dir(fake_cfg) / res["id"]
    link.symlink_to(real, target_is_directory=True)
    with _restart(fake_cfg, fake_wb) as client:
        assert client.get(res["video_url"]).status_code == 404
        assert client.get("/api/info").json()["storage"]["jobs"] == 0
    assert link.is_symlink() and (real / "result.mp4").is_file()


def test_a_linked_segment_is_never_served(fake_client, fake_cfg, tmp_path):
    job = fake_client.post("/api/stream/generate", json={"text": "Hi"}).json()
    for _ in range(500):
        if fake_client.get(job["status_url"]).json()["state"] == "done":
            break
        threading.Event().wait(0.02)
    stream = jobs_dir(fake_cfg) / job["id"] / "result.files" / "stream"
    seg = stream / "chunk_000" / "seg_00000.ts"
    assert fake_client.get(f"/streams/{job['id']}/chunk_000/seg_00000.ts").status_code == 200
    outside = tmp_path / "outside.ts"
    outside.write_bytes(b"secret")
    seg.unlink()
    seg.symlink_to(outside)
    assert fake_client.get(f"/streams/{job['id']}/chunk_000/seg_00000.ts").status_code == 404
    os.replace(stream / "chunk_000", tmp_path / "moved")  # a linked folder on the way
    (stream / "chunk_000").symlink_to(tmp_path / "moved", target_is_directory=True)
    assert fake_client.get(f"/streams/{job['id']}/chunk_000/seg_00000.ts").status_code == 404


# --- byte ranges and HEAD on stream files ------------------------------------------------------


def _done_stream(client: TestClient) -> tuple[str, bytes]:
    job = client.post("/api/stream/generate", json={"text": "Hi"}).json()
    for _ in range(500):
        if client.get(job["status_url"]).json()["state"] == "done":
            break
        threading.Event().wait(0.02)
    url = f"/streams/{job['id']}/chunk_000/seg_00000.ts"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    return url, whole.content


def test_segments_honour_byte_ranges(fake_client):
    url, whole = _done_stream(fake_client)
    r = fake_client.get(url, headers={"Range": "bytes=188-375"})
    assert r.status_code == 206 and r.content == whole[188:376]
    assert r.headers["content-range"] == f"bytes 188-375/{len(whole)}"
    tail = fake_client.get(url, headers={"Range": "bytes=-188"})
    assert tail.status_code == 206 and tail.content == whole[-188:]
    rest = fake_client.get(url, headers={"Range": "bytes=376-"})
    assert rest.status_code == 206 and rest.content == whole[376:]
    out = fake_client.get(url, headers={"Range": f"bytes={len(whole)}-"})
    assert out.status_code == 416 and out.headers["content-range"] == f"bytes */{len(whole)}"


def test_segments_and_playlists_answer_head(fake_client):
    url, whole = _done_stream(fake_client)
    for u, kind in ((url, "video/mp2t"), (url.rsplit("/", 2)[0] + "/index.m3u8", "mpegurl")):
        r = fake_client.head(u)
        assert r.status_code == 200, u  # was 405
        assert kind in r.headers["content-type"] and r.content == b""
    assert int(fake_client.head(url).headers["content-length"]) == len(whole)
    assert fake_client.head(url.replace("seg_00000", "seg_00009")).status_code == 404


# --- a job cancelled during speech synthesis -----------------------------------------------------


def test_a_job_cancelled_during_tts_frees_its_slot_at_once(fake_cfg):
    """The next job starts while the cancelled one is still inside TTS (before: only once
    TTS had ended); the cancelled job never leases a replica."""
    wb = LeasingWorkbench(fake_cfg)  # max_running 1, max_waiting 1
    app = server.create_app(fake_cfg, workbench=wb, warmup=False)
    with TestClient(app, base_url=BASE) as client:
        first = client.post("/api/stream/generate", json={"text": "first"}).json()
        _wait(lambda: wb.in_tts == ["first"])
        second = client.post("/api/stream/generate", json={"text": "second"}).json()
        assert client.get(second["status_url"]).json()["state"] == "queued"
        assert client.delete(first["status_url"]).json()["state"] == "cancelled"
        _wait(lambda: wb.in_tts == ["first", "second"])  # its slot is free: TTS still holds
        assert client.get(second["status_url"]).json()["state"] == "running"
        wb.tts_gate.set()
        _wait(lambda: client.get(second["status_url"]).json()["state"] == "done")
        q = app.state.lipbench.queue
        _wait(lambda: q.draining == 0)
        assert wb.pools.leased == ["second"]  # the cancelled job was refused its lease
        assert q.running == 0 and q.stats()["abandoned"] == 1
        assert not (jobs_dir(fake_cfg) / first["id"]).exists()


def _wait(cond: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        threading.Event().wait(0.02)
    raise AssertionError("condition not reached")


def test_at_most_max_running_cancelled_jobs_drain_in_the_background():
    """Freed early, a cancelled job's thread still runs: past ``max_running`` of those, a
    cancelled job keeps its slot until its thread returns (start/cancel loops cannot pile up
    background work)."""
    from lipbench.server.queue import JobQueue

    async def go() -> None:
        q = JobQueue(max_running=1, max_waiting=2)
        a_go, b_go = threading.Event(), threading.Event()
        a = asyncio.ensure_future(q.run(lambda: a_go.wait(30), idle=lambda: True))
        await _until_async(lambda: q.running == 1)
        a.cancel()
        await _until_async(lambda: q.running == 0 and q.draining == 1)  # freed at once
        b = asyncio.ensure_future(q.run(lambda: b_go.wait(30), idle=lambda: True))
        await _until_async(lambda: q.running == 1)
        b.cancel()
        await asyncio.sleep(0.1)
        assert q.running == 1 and q.draining == 1  # the cap: b keeps its slot
        a_go.set()
        await _until_async(lambda: q.draining == 0)
        assert q.running == 1
        b_go.set()
        await _until_async(lambda: q.running == 0)
        q.close()

    asyncio.run(go())


async def _until_async(cond: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_a_stored_stream_whose_record_cannot_be_read_still_answers(fake_cfg, fake_wb):
    with _restart(fake_cfg, fake_wb) as client:
        job, _ = _done_stream_job(client)
    (jobs_dir(fake_cfg) / job["id"] / "result.run.json").write_text('{"record_version": 1}')
    with _restart(fake_cfg, fake_wb) as client:
        r = client.get(job["status_url"])
        assert r.status_code == 200 and r.json()["state"] == "done" and r.json()["result"] is None


def _done_stream_job(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    job = client.post("/api/stream/generate", json={"text": "Hi"}).json()
    for _ in range(500):
        status = client.get(job["status_url"]).json()
        if status["state"] == "done":
            return job, status
        threading.Event().wait(0.02)
    raise AssertionError("the stream job did not finish")
