"""The web API (lipbench.server).

Most tests use a stand-in workbench (instant, or held on a gate) so queue, storage and
error behaviour is deterministic. The ``live`` tests run ``lipbench serve`` as a process on
loopback with real replicas: real jobs, two at once on shared replicas, a soak, and a stop
that must leave no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
import yaml
from fastapi.testclient import TestClient

from lipbench import server, video
from lipbench.errors import InputError, LipbenchError, TTSError
from lipbench.jobs import UNTRAINED_LABEL, UNTRAINED_NOTE, output_names, resolve_job
from lipbench.record import (
    ModelLoad,
    Outputs,
    ReplicaRow,
    RunRecord,
    Timings,
    TTSInfo,
    WeightsRow,
    read_record,
)
from lipbench.render import stamp_label
from lipbench.server.schemas import ErrorBody
from lipbench.tts import EngineUnavailableError

TINY_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
BASE = "http://127.0.0.1:3000"  # an allowed Host for in-process clients


# --- a stand-in workbench ---------------------------------------------------------------------


def _weights(model: str, i: int) -> WeightsRow:
    return WeightsRow(model, None, "seeded-random", None, i, False)


class FakePool:
    def __init__(self, models: list[str]):
        self.models = models

    def replica_rows(self) -> list[ReplicaRow]:
        return [ReplicaRow(i, m, 1, "cpu", 1000 + i, 0.0, _weights(m, i), 16, None)
                for i, m in enumerate(self.models)]  # fmt: skip


def fake_record(strategy: str, models: list[str], out: Path, spoke: bool) -> RunRecord:
    names = output_names(out)
    return RunRecord(
        record_version=2, engine="pool", strategy=strategy, models=models,
        weights={m: _weights(m, i) for i, m in enumerate(models)}, weights_trained=False,
        weights_note=UNTRAINED_NOTE, label=UNTRAINED_LABEL,
        timings=Timings(0.1 if spoke else 0.0, 0.1, 0.0, 0.1, 1.0, 0.1, 1.4),
        plan={"n_chunks": 1, "chunks": []}, chunks=[], seams=[], frames=25, fps=25.0,
        audio_duration_s=1.0, render_fps=25.0, replicas=[], device="cpu", threads_per_replica=1,
        one_chunk_on_full_replica=False,
        outputs=Outputs(str(names.video), str(names.record), str(names.audio), None, str(names.plan)),
        model_load=ModelLoad(False, [0.0], "fake"), cpu={}, restarts=0,
        tts=TTSInfo("piper", "en", 22050, 5) if spoke else None, render_options={},
        snakemake_benchmarks={}, machine={}, versions={}, created="",
    )  # fmt: skip


class FakeWorkbench:
    """Quacks like pipeline.Workbench: writes the files a job publishes (the WAV holds the
    text, or a copy of the audio it was given). ``gate`` (when cleared) holds every job;
    ``error`` makes jobs raise."""

    def __init__(self, cfg: dict[str, Any], gated: bool = False):
        self.cfg = cfg
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.error: BaseException | None = None
        self.calls: list[dict[str, Any]] = []
        self.finished: list[str] = []
        self.closed = False

    def job(self, strategy: str = "sequential", *a: Any) -> Any:
        return resolve_job(self.cfg, strategy, *a)

    def pool(self, models: list[str], threads: int | None = None) -> FakePool:
        return FakePool(list(models))

    def _hold(self, kw: dict[str, Any]) -> None:
        assert self.gate.wait(30), "test gate never released"

    def generate(
        self, out: Any, text: str | None = None, audio: Any = None, **kw: Any
    ) -> RunRecord:
        names = output_names(out)
        self.calls.append({"out": names.video, "text": text, "audio": audio, **kw})
        names.side.mkdir(parents=True)  # as the real one: a folder exists while the job runs
        self._hold(kw)
        if self.error is not None:
            raise self.error
        names.audio.write_bytes(Path(audio).read_bytes() if audio else text.encode())
        names.video.write_bytes(TINY_MP4)
        rec = fake_record(kw["strategy"], list(self.job(kw["strategy"]).models), names.video,
                          spoke=text is not None)  # fmt: skip
        rec.write(names.record)
        self.finished.append(names.video.parent.name)
        return rec

    def close(self) -> None:
        self.closed = True


class CancellableWorkbench(FakeWorkbench):
    """Has the hook: ``generate(should_stop=…)`` stops at the next 'batch' once it is true."""

    def generate(self, out: Any, text: str | None = None, audio: Any = None,
                 should_stop: Any = None, **kw: Any) -> RunRecord:  # fmt: skip
        self.cancel_seen = should_stop
        return super().generate(out, text, audio, should_stop=should_stop, **kw)

    def _hold(self, kw: dict[str, Any]) -> None:
        deadline = time.monotonic() + 30
        while not self.gate.wait(0.02):  # one 'batch'
            assert time.monotonic() < deadline, "test gate never released"
            if kw["should_stop"]():
                raise LipbenchError("job cancelled")


@pytest.fixture
def fake_cfg(tmp_path, make_config) -> dict[str, Any]:
    return make_config(
        tmp_path,
        text={"max_chars": 40},
        server={"max_running": 1, "max_waiting": 1, "max_body_bytes": 2048},
    )


@pytest.fixture
def fake_wb(fake_cfg) -> Iterator[FakeWorkbench]:
    wb = FakeWorkbench(fake_cfg)
    yield wb
    wb.gate.set()  # never leave a worker thread blocked


@pytest.fixture
def fake_client(fake_cfg, fake_wb) -> Iterator[TestClient]:
    app = server.create_app(fake_cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield client


def jobs_dir(cfg: dict[str, Any]) -> Path:
    return Path(cfg["results_dir"]) / "server"


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field", "needle"),
    [
        ("/api/generate", {"text": "hi", "lang": "xx"}, "lang", "'xx' is not supported"),
        ("/api/generate", {"text": "hi", "lang": "ru", "engine": "piper"}, "lang", "by the piper"),
        ("/api/generate", {"text": "a" * 41, "lang": "en"}, "text", "limit of 40"),
        ("/api/generate", {"text": "   ", "lang": "en"}, "text", "empty"),
        ("/api/generate", {"text": "hi\x00there"}, "text", "control character"),
        ("/api/generate", {"text": "a\x1b[31m"}, "text", "U+001B"),
        ("/api/generate", {"text": "?!… ..."}, "text", "no letter, digit or symbol"),
        ("/api/generate", {"lang": "en"}, "body", "either text or audio_id"),
        ("/api/generate", {"text": "hi", "audio_id": "a" * 32}, "body", "not both"),
        ("/api/generate", {"audio_id": "../../etc/passwd"}, "audio_id", "32-hex-digit"),
        ("/api/generate", {"text": "hi", "engine": "festival"}, "engine", "piper"),
        ("/api/generate", {"text": "hi", "chunks": 2}, "chunks", "not permitted"),
        ("/api/generate_parallel", {"text": "hi", "chunks": 99}, "chunks", "less than or equal"),
        ("/api/generate_parallel", {"text": "hi", "chunks": 0}, "chunks", "greater than"),
    ],
)
def test_validation_errors_are_clear_422(fake_client, fake_wb, path, body, field, needle):
    r = fake_client.post(path, json=body)
    assert r.status_code == 422
    data = r.json()
    assert needle in data["detail"] and data["fix"]
    assert any(e["field"] == field and needle in e["message"] for e in data["errors"])
    assert not fake_wb.calls  # nothing was queued


@pytest.mark.parametrize(
    ("body", "fix"),
    [
        ({"text": "hi", "lang": "ru", "engine": "piper"}, "espeak"),
        ({"text": "a\x00b"}, "remove it"),
        ({"text": "?!"}, "pronounceable words"),
        ({"text": "hi", "chunks": 2}, '{"text": "Hello!", "lang": "en"}'),  # pydantic's own
    ],
)
def test_validation_errors_carry_their_own_fix(fake_client, body, fix):
    r = fake_client.post("/api/generate", json=body)
    assert r.status_code == 422 and fix in r.json()["fix"]
    assert fix not in r.json()["detail"]


def test_invalid_json_is_422(fake_client):
    r = fake_client.post(
        "/api/generate", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "body: the body is not valid JSON"


def test_fake_generate_ok_and_default_lang(fake_client, fake_wb):
    r = fake_client.post("/api/generate", json={"text": "Hello"})
    assert r.status_code == 200, r.text
    assert fake_wb.calls[0]["lang"] == "en" and fake_wb.calls[0]["strategy"] == "sequential"
    assert fake_wb.calls[0]["chunks"] is None and "cancel" not in fake_wb.calls[0]
    r = fake_client.post(
        "/api/generate_parallel", json={"text": "Привет", "lang": "ru", "chunks": 2}
    )
    assert r.status_code == 200
    assert fake_wb.calls[1]["strategy"] == "parallel" and fake_wb.calls[1]["chunks"] == 2
    assert fake_client.get(r.json()["video_url"]).content == TINY_MP4
    res = r.json()
    assert res["render_s"] == pytest.approx(1.4 - 0.1 - 0.1)
    assert res["audio_sha256"] == hashlib.sha256("Привет".encode()).hexdigest()


def test_audio_id_renders_the_earlier_jobs_wav(fake_client, fake_wb, fake_cfg):
    first = fake_client.post("/api/generate_parallel", json={"text": "Hello", "chunks": 2}).json()
    again = fake_client.post("/api/generate", json={"audio_id": first["audio_id"]})
    assert again.status_code == 200, again.text
    call = fake_wb.calls[1]
    assert call["text"] is None and "lang" not in call and "engine" not in call
    assert Path(call["audio"]) == jobs_dir(fake_cfg) / first["id"] / "result.files" / "audio.wav"
    res = again.json()
    assert res["audio_sha256"] == first["audio_sha256"] and res["audio_from"] == first["id"]
    assert res["timings"]["tts"] == 0.0 and res["tts"] is None
    gone = fake_client.post("/api/generate", json={"audio_id": "0" * 32})
    assert gone.status_code == 422
    assert gone.json()["errors"][0]["field"] == "audio_id" and "send text" in gone.json()["fix"]


# --- ids, files, HEAD ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/videos/0123456789abcdef0123456789abcdef.mp4",  # well-formed but unknown
        "/videos/0123456789ABCDEF0123456789ABCDEF.mp4",  # ids are lower-case hex only
        "/videos/..%2F..%2Fetc%2Fpasswd.mp4",
        "/videos/%2e%2e.mp4",
        "/videos/....mp4",
        "/videos/..%5C..%5Cetc%5Cpasswd.mp4",
        "/videos/%2Fetc%2Fpasswd.mp4",
        "/videos/result.mp4",
    ],
)
def test_unknown_or_traversal_ids_are_404(fake_client, url):
    r = fake_client.get(url)
    assert r.status_code == 404
    assert "detail" in r.json()


def test_traversal_to_a_real_file_is_404(fake_client):
    """Even when the target exists inside the server's own folder."""
    made = fake_client.post("/api/generate", json={"text": "Hello"}).json()
    rel = f"{made['id']}/result.mp4".replace("/", "%2F")
    assert fake_client.get(f"/videos/{rel}").status_code == 404
    assert fake_client.get(f"/videos/{made['id']}%2Fresult.mp4").status_code == 404
    assert fake_client.get(made["video_url"]).status_code == 200


def test_folder_not_made_by_this_server_is_not_served(fake_client, fake_cfg):
    stray_id = "ab" * 16
    stray = jobs_dir(fake_cfg) / stray_id
    stray.mkdir(parents=True)
    (stray / "result.mp4").write_bytes(TINY_MP4)
    assert fake_client.get(f"/videos/{stray_id}.mp4").status_code == 404


def test_head_on_a_video(fake_client):
    made = fake_client.post("/api/generate", json={"text": "Hello"}).json()
    r = fake_client.head(made["video_url"])
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "video/mp4"
    assert int(r.headers["content-length"]) == len(TINY_MP4)
    assert r.headers["accept-ranges"] == "bytes"
    assert fake_client.head("/videos/" + "0" * 32 + ".mp4").status_code == 404


# --- Host allow-list ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["rebind.attacker.test", "127.0.0.1.attacker.test",
                                  "localhost:abc", "[::1", "evil:80:80", ""])  # fmt: skip
@pytest.mark.parametrize(
    "path", ["/api/health", "/parallel_test", "/static/app.js", "/videos/x.mp4"]
)
def test_foreign_host_is_400(fake_client, host, path):
    r = fake_client.get(path, headers={"host": host})
    assert r.status_code == 400
    assert "is not allowed" in r.json()["detail"] and "allowed_hosts" in r.json()["fix"]


def test_foreign_host_cannot_start_a_job(fake_client, fake_wb):
    r = fake_client.post("/api/generate", json={"text": "Hi"}, headers={"host": "evil.test"})
    assert r.status_code == 400 and not fake_wb.calls


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:3000", "localhost", "LOCALHOST:8080",
                                  "[::1]", "[::1]:3000"])  # fmt: skip
def test_loopback_names_any_port_are_allowed(fake_client, host):
    assert fake_client.get("/api/health", headers={"host": host}).status_code == 200


def test_allowed_hosts_configurable(tmp_path, make_config, fake_wb):
    cfg = make_config(tmp_path, server={"allowed_hosts": ["lipbench.example", "::1"]})
    app = server.create_app(cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url="http://lipbench.example") as client:
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/health", headers={"host": "[::1]:9"}).status_code == 200
        assert client.get("/api/health", headers={"host": "localhost"}).status_code == 400
    cfg = make_config(tmp_path, server={"allowed_hosts": ["*"]})
    app = server.create_app(cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url="http://anything.test") as client:
        assert client.get("/api/health").status_code == 200


# --- limits and errors --------------------------------------------------------------------


def test_body_over_limit_is_413_by_content_length(fake_client, fake_wb):
    r = fake_client.post(
        "/api/generate",
        content=json.dumps({"text": "x" * 5000}).encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    assert "2048 bytes" in r.json()["detail"]
    assert not fake_wb.calls


def test_body_over_limit_is_413_when_chunked(fake_cfg, fake_wb):
    """No Content-Length: the bytes that actually arrive are counted."""

    async def go() -> httpx.Response:
        app = server.create_app(fake_cfg, workbench=fake_wb, warmup=False)
        transport = httpx.ASGITransport(app=app)

        async def body() -> Any:
            for _ in range(10):
                yield b"x" * 500

        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post(
                "/api/generate", content=body(), headers={"content-type": "application/json"}
            )

    r = asyncio.run(go())
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413
    assert not fake_wb.calls


@pytest.mark.parametrize(
    ("error", "status", "needle"),
    [
        (RuntimeError("secret internals"), 500, "internal server error (RuntimeError)"),
        (TTSError("espeak failed", "try another engine"), 500, "espeak failed"),
        (InputError("no face found", "use another image"), 422, "no face found"),
        # what the TTS package raises for text it cannot speak and for gTTS offline
        (InputError("piper produced no audio", "give words"), 422, "no audio"),
        (EngineUnavailableError("gTTS: no network", "use espeak"), 422, "no network"),
    ],
)
def test_job_errors_are_json_without_traceback(
    fake_client, fake_wb, fake_cfg, error, status, needle
):
    fake_wb.error = error
    r = fake_client.post("/api/generate", json={"text": "Hello"})
    assert r.status_code == status
    assert needle in r.json()["detail"]
    assert "Traceback" not in r.text and "secret internals" not in r.text
    if isinstance(error, LipbenchError):
        assert r.json()["fix"] == error.fix
    # a failed job leaves no folder and no servable id behind
    assert not any(jobs_dir(fake_cfg).iterdir())
    assert fake_client.get("/api/health").json()["queue"]["running"] == 0


def test_unknown_route_and_method_are_json(fake_client):
    r = fake_client.get("/nope")
    assert r.status_code == 404 and r.json()["detail"] == "Not Found" and "/docs" in r.json()["fix"]
    r = fake_client.get("/api/generate")
    assert r.status_code == 405 and "detail" in r.json()


# --- page and docs --------------------------------------------------------------------------


def test_page_and_its_assets_are_local(fake_client):
    page = fake_client.get("/parallel_test")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    for needle in ('id="compare"', 'id="panel-parallel"', 'id="panel-sequential"', "<video",
                   'id="pairs"', 'id="speedup-noise"', 'id="speedup-tts"'):  # fmt: skip
        assert needle in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/app.js" in assets and "/static/style.css" in assets
    for url in assets:
        assert not url.startswith(("http:", "https:", "//")), f"external asset {url}"
        if url.startswith("/static/"):
            r = fake_client.get(url)
            assert r.status_code == 200 and r.content
            assert not re.search(rb"https?://", r.content), f"{url} references the network"
    assert fake_client.get("/", follow_redirects=False).headers["location"] == "/parallel_test"


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _error_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    resp = spec["paths"][path][method]["responses"][str(status)]
    return _resolve(spec, resp["content"]["application/json"]["schema"])


def test_openapi_documents_the_real_error_body(fake_client, fake_wb):
    spec = fake_client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(spec)  # FastAPI's list-style 422 is not ours
    video_op = spec["paths"]["/videos/{video_id}.mp4"]["get"]
    assert "422" not in video_op["responses"] and "404" in video_op["responses"]
    assert "head" in spec["paths"]["/videos/{video_id}.mp4"]
    assert video_op["parameters"][0]["name"] == "video_id"
    fake_wb.error = InputError("x", "y")
    real = {  # (path, method, status) documented → a real body with that status
        ("/api/generate", "post", 422): fake_client.post("/api/generate", json={"text": "\x00"}),
        ("/api/generate_parallel", "post", 413): fake_client.post(
            "/api/generate_parallel", content=b"{" + b" " * 3000 + b"}",
            headers={"content-type": "application/json"}),
        ("/api/generate", "post", 400): fake_client.get("/api/health", headers={"host": "e.test"}),
        ("/videos/{video_id}.mp4", "get", 404): fake_client.get("/videos/" + "0" * 32 + ".mp4"),
    }  # fmt: skip
    real[("/api/generate_parallel", "post", 422)] = fake_client.post(
        "/api/generate_parallel", json={"text": "Hi"}
    )  # an InputError from the job
    for (path, method, status), resp in real.items():
        assert resp.status_code == status, (path, resp.text)
        schema = _error_schema(spec, path, method, status)
        body = resp.json()
        assert set(schema["required"]) <= set(body) <= set(schema["properties"]), (status, body)
        for key, value in body.items():
            prop = schema["properties"][key]
            kinds = {t.get("type") for t in prop.get("anyOf", [prop])}
            assert {"string": str, "array": list, "integer": int}[
                next(k for k in kinds if k != "null")
            ] is type(value)
        ErrorBody.model_validate(body)  # extra keys forbidden


def test_openapi_and_docs(fake_client):
    spec = fake_client.get("/openapi.json").json()
    assert {"/api/generate", "/api/generate_parallel", "/videos/{video_id}.mp4"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("GenerateRequest")
    assert "429" in spec["paths"]["/api/generate"]["post"]["responses"]
    docs = fake_client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    if server.swagger_assets() is not None:  # offline Swagger UI when the bundle is installed
        assert "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert fake_client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_untrained_label_sits_top_left():
    """Clear of a browser player's controls, which cover the bottom of the picture."""
    frame = np.full((256, 256, 3), 200, np.uint8)
    stamp_label(frame, UNTRAINED_LABEL)
    ys, xs = np.nonzero(frame.sum(axis=2) == 0)  # the label's black box
    assert ys.size and ys.max() < 256 * 0.15 and xs.min() < 10
    assert (frame[128:] == 200).all()  # nothing in the bottom half


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


# --- queue ----------------------------------------------------------------------------------


def _asgi_post(app: Any, path: str, payload: dict[str, Any], leave: asyncio.Event) -> Callable:
    """A raw ASGI POST whose client disconnects once ``leave`` is set."""
    body = json.dumps(payload).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost:3000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 3000),
    }
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def call() -> list[dict[str, Any]]:
        await app(scope, receive, send)
        return sent

    return call


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def _gated(cfg: dict[str, Any], wb_class: type = FakeWorkbench) -> Iterator[tuple[Any, Any]]:
    wb = wb_class(cfg, gated=True)
    app = server.create_app(cfg, workbench=wb, warmup=False)
    app.state.lipbench.start()
    yield app, wb
    wb.gate.set()
    app.state.lipbench.close()


@pytest.fixture
def gated(fake_cfg) -> Iterator[tuple[Any, FakeWorkbench]]:
    yield from _gated(fake_cfg)


@pytest.fixture
def gated_cancellable(fake_cfg) -> Iterator[tuple[Any, CancellableWorkbench]]:
    yield from _gated(fake_cfg, CancellableWorkbench)


def test_queue_full_is_429_with_retry_after(gated):
    app, wb = gated
    q = app.state.lipbench.queue

    async def go() -> tuple[list[httpx.Response], httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            first = asyncio.create_task(client.post("/api/generate", json={"text": "one"}))
            await _until(lambda: q.running == 1)
            second = asyncio.create_task(
                client.post("/api/generate_parallel", json={"text": "two"})
            )
            await _until(lambda: q.waiting == 1)
            third = await client.post("/api/generate", json={"text": "three"})
            wb.gate.set()
            return [await first, await second], third

    done, refused = asyncio.run(go())
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == refused.json()["retry_after_s"] >= 1
    assert "queue is full" in refused.json()["detail"]
    assert [r.status_code for r in done] == [200, 200]
    assert [c["text"] for c in wb.calls] == ["one", "two"]  # the refused job never ran
    assert q.running == 0 and q.waiting == 0


def test_waiting_job_of_a_departed_client_never_runs(gated):
    app, wb = gated
    q = app.state.lipbench.queue

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            first = asyncio.create_task(client.post("/api/generate", json={"text": "stays"}))
            await _until(lambda: q.running == 1)
            leave = asyncio.Event()
            gone = asyncio.create_task(
                _asgi_post(app, "/api/generate", {"text": "leaves"}, leave)()
            )
            await _until(lambda: q.waiting == 1)
            leave.set()
            await asyncio.wait_for(gone, 5)
            assert q.waiting == 0 and q.cancelled == 1  # its place is given up at once
            wb.gate.set()
            return await first

    assert asyncio.run(go()).status_code == 200
    assert [c["text"] for c in wb.calls] == ["stays"]


def test_running_job_of_a_departed_client_is_cancelled(gated_cancellable):
    """With the workbench's cancel hook the job stops at its next batch: the slot frees
    while the gate (the rest of the render) is still closed."""
    app, wb = gated_cancellable
    state = app.state.lipbench
    q = state.queue
    assert state.info()["cancels_running_jobs"] is True

    async def go() -> httpx.Response:
        leave = asyncio.Event()
        gone = asyncio.create_task(_asgi_post(app, "/api/generate", {"text": "leaves"}, leave)())
        await _until(lambda: len(wb.calls) == 1)
        leave.set()
        sent = await asyncio.wait_for(gone, 5)
        assert sent[0]["status"] == 499
        await _until(lambda: q.running == 0)  # stopped, not finished: the gate is closed
        assert q.abandoned == 1 and wb.finished == []
        assert wb.cancel_seen()
        wb.gate.set()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.post("/api/generate", json={"text": "next"})

    nxt = asyncio.run(go())
    assert nxt.status_code == 200
    assert not wb.calls[0]["out"].parent.exists()  # its folder is gone
    assert [p.name for p in jobs_dir(state.cfg).iterdir()] == [nxt.json()["id"]]


def test_running_job_without_the_hook_finishes_then_is_discarded(gated):
    app, wb = gated
    state = app.state.lipbench
    q = state.queue
    assert state.info()["cancels_running_jobs"] is False

    async def go() -> httpx.Response:
        leave = asyncio.Event()
        gone = asyncio.create_task(_asgi_post(app, "/api/generate", {"text": "leaves"}, leave)())
        await _until(lambda: len(wb.calls) == 1)
        leave.set()
        await asyncio.wait_for(gone, 5)
        # the thread still renders: the slot stays taken so replicas are never shared
        assert q.running == 1 and q.abandoned == 1
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            nxt = asyncio.create_task(client.post("/api/generate", json={"text": "next"}))
            await _until(lambda: q.waiting == 1)
            wb.gate.set()  # the abandoned job finishes, then the next one runs
            return await nxt

    nxt = asyncio.run(go())
    assert nxt.status_code == 200
    assert [c["text"] for c in wb.calls] == ["leaves", "next"]
    assert not wb.calls[0]["out"].parent.exists()  # its output was discarded
    assert state.store.get(nxt.json()["id"]) and state.store.stats()["jobs"] == 1
    assert q.running == 0 and q.waiting == 0


def test_job_queue_unit():
    async def go() -> None:
        q = server.JobQueue(max_running=1, max_waiting=0)
        gate = threading.Event()
        task = asyncio.create_task(q.run(lambda: gate.wait(10) and "done"))
        await _until(lambda: q.running == 1)
        with pytest.raises(server.QueueFull) as info:
            await q.run(lambda: "never")
        assert info.value.retry_after >= 1
        gate.set()
        assert await task == "done"
        assert q.stats()["completed"] == 1 and q.running == 0
        assert await q.run(lambda: 42) == 42
        flag = threading.Event()
        running = asyncio.create_task(q.run(lambda: flag.wait(10), cancel=flag))
        await _until(lambda: q.running == 1)
        q.close()  # shutdown tells running jobs to stop
        assert await running is True

    asyncio.run(go())


# --- lipbench serve (in process) ------------------------------------------------------------


def test_serve_binds_loopback_by_default(monkeypatch, fake_cfg):
    import uvicorn

    from lipbench.server import launch

    seen: dict[str, Any] = {}
    wb = FakeWorkbench(fake_cfg)
    real_create = launch.create_app
    monkeypatch.setattr(launch, "create_app", lambda cfg: real_create(cfg, workbench=wb, warmup=False))  # fmt: skip
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setattr(launch, "check_port", lambda host, port: None)
    assert server.serve(fake_cfg) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == fake_cfg["server"]["port"]
    assert seen["app"].state.lipbench.started and seen["app"].state.lipbench.closed
    assert server.serve(fake_cfg, port=4321) == 0
    assert seen["port"] == 4321


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LipbenchError, match=f"127.0.0.1:{port}.*--port"):
            server.check_port("127.0.0.1", port)


# --- live: `lipbench serve` as a process on loopback, real replicas ---------------------------

START_TIMEOUT_S = 300
JOB_TIMEOUT_S = 240
SOAK_REQUESTS, SOAK_CLIENTS, SOAK_LIMIT_S = 30, 4, 420
SOAK_TEXTS = ["Hi.", "Hello there.", "Good morning.", "Thank you.", "See you soon."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory, make_config) -> Iterator[SimpleNamespace]:
    """`lipbench serve` with two running slots (one waiting): two jobs can run at once, so
    the Workbench's leases alone keep them off each other's replicas."""
    root = tmp_path_factory.mktemp("live")
    cfg = make_config(root, server={"max_running": 2, "max_waiting": 1})
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    port = _free_port()
    log_path = root / "server.log"
    cmd = [sys.executable, "-m", "lipbench.cli", "--config", str(config), "serve", "--port", str(port)]  # fmt: skip
    with log_path.open("wb") as log:
        # its own session: if it hangs, the group this test made can be killed with it
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    ns = SimpleNamespace(base=f"http://127.0.0.1:{port}", proc=proc, ps=psutil.Process(proc.pid),
                         root=root, cfg=cfg, log=log_path, seen={})  # fmt: skip
    try:
        _wait_ready(ns)
        yield ns
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _wait_ready(ns: SimpleNamespace) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ns.proc.poll() is not None:
            pytest.fail(f"lipbench serve exited with {ns.proc.returncode}:\n{_tail(ns.log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{ns.base}/api/health", timeout=2).json().get("status") == "ok":
                _note_children(ns)
                return
        time.sleep(0.5)
    pytest.fail(f"lipbench serve not ready after {START_TIMEOUT_S} s:\n{_tail(ns.log)}")


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def _note_children(ns: SimpleNamespace) -> list[psutil.Process]:
    """The server's descendants now; every one ever seen is remembered for the stop test."""
    kids = ns.ps.children(recursive=True)
    for k in kids:
        ns.seen[k.pid] = k
    return kids


def _replicas(ns: SimpleNamespace) -> list[psutil.Process]:
    out = []
    for k in _note_children(ns):
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(k.cmdline()):  # not the resource tracker, not ffmpeg
                out.append(k)
    return out


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _post(ns: SimpleNamespace, path: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{ns.base}{path}", json=body, timeout=JOB_TIMEOUT_S, **kw)


def _record(ns: SimpleNamespace, res: dict[str, Any]) -> RunRecord:
    return read_record(ns.root / "results" / "server" / res["id"] / "result.run.json")


@pytest.fixture(scope="module")
def live_par(live) -> dict[str, Any]:
    r = _post(live, "/api/generate_parallel", {"text": "Привет, мир! Как дела?", "lang": "ru", "chunks": 2})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def live_seq_same_audio(live, live_par) -> dict[str, Any]:
    r = _post(live, "/api/generate", {"audio_id": live_par["audio_id"]})
    assert r.status_code == 200, r.text
    return r.json()


def _check_against_record(live: SimpleNamespace, res: dict[str, Any]) -> RunRecord:
    rec = _record(live, res)
    # the response is the run record's numbers, not a separate measurement
    assert res["timings"] == pytest.approx(rec.timings.to_dict())
    assert res["render_s"] == pytest.approx(rec.timings.total - rec.timings.tts - rec.timings.convert, abs=1e-3)  # fmt: skip
    assert res["plan"] == rec.plan and res["frames"] == rec.frames
    assert res["weights"] == {m: w.to_dict() for m, w in rec.weights.items()}
    assert hashlib.sha256(Path(rec.outputs.audio).read_bytes()).hexdigest() == res["audio_sha256"]
    return rec


@pytest.mark.slow
def test_live_parallel_job(live, live_par):
    rec = _check_against_record(live, live_par)
    assert live_par["models"] == ["gan", "nogan"] and live_par["plan"]["n_chunks"] == 2
    assert {c["replica"] for c in live_par["chunks"]} == {0, 1}
    assert live_par["tts"]["engine"] == "espeak" and live_par["tts"]["lang"] == "ru"
    assert rec.label == UNTRAINED_LABEL and live_par["weights_trained"] is False


@pytest.mark.slow
def test_live_same_audio_on_both_sides(live, live_par, live_seq_same_audio):
    """Compare's contract: the sequential job renders the parallel job's WAV byte for byte."""
    seq = live_seq_same_audio
    rec = _check_against_record(live, seq)
    assert seq["audio_sha256"] == live_par["audio_sha256"]
    assert seq["audio_from"] == live_par["id"] and seq["tts"] is None and rec.tts is None
    assert seq["timings"]["tts"] == 0.0
    assert seq["frames"] == live_par["frames"] and seq["strategy"] == "sequential"


@pytest.mark.slow
def test_live_video_whole_by_range_and_head(live, live_par, tmp_path):
    url = f"{live.base}{live_par['video_url']}"
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.content[4:8] == b"ftyp"
    (tmp_path / "got.mp4").write_bytes(r.content)
    assert video.count_frames(tmp_path / "got.mp4")[0] == live_par["frames"]
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == r.content[100:200]
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(r.content)


@pytest.mark.slow
def test_live_foreign_host_is_400(live, live_par):
    done = httpx.get(f"{live.base}/api/health").json()["queue"]["completed"]
    evil = {"Host": "rebind.attacker.test"}
    for method, path in [("GET", "/api/health"), ("GET", "/parallel_test"),
                         ("GET", live_par["video_url"]), ("HEAD", live_par["video_url"])]:  # fmt: skip
        assert httpx.request(method, f"{live.base}{path}", headers=evil).status_code == 400
    r = _post(live, "/api/generate", {"text": "Hi"}, headers=evil)
    assert r.status_code == 400 and "allowed_hosts" in r.json()["fix"]
    assert httpx.get(f"{live.base}/api/health").json()["queue"]["completed"] == done
    port = live.base.rsplit(":", 1)[1]
    assert httpx.get(f"{live.base}/api/health", headers={"Host": f"localhost:{port}"}).status_code == 200  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("text", "needle"), [("?!… ...", "no letter"), ("Hi\x00", "U+0000")])
def test_live_unspeakable_text_is_422(live, text, needle):
    r = _post(live, "/api/generate", {"text": text})
    assert r.status_code == 422 and needle in r.json()["detail"] and r.json()["fix"]


@pytest.mark.slow
def test_live_two_jobs_at_once_never_share_a_replica(live):
    """max_running 2: a sequential job and a one-chunk parallel job run together. The
    one-chunk parallel job renders on the sequential pool, so the Workbench's lease makes
    them take turns on its replica: both succeed, their renders do not overlap, and the
    server still has exactly its three replicas."""
    before = {p.pid for p in _replicas(live)}
    assert len(before) == 3
    out: dict[str, httpx.Response] = {}
    bodies = {"/api/generate": {"text": "Hello there, how are you?"},
              "/api/generate_parallel": {"text": "Hello there, how are you?", "chunks": 1}}  # fmt: skip
    threads = [threading.Thread(target=lambda p=p, b=b: out.update({p: _post(live, p, b)}))
               for p, b in bodies.items()]  # fmt: skip
    for t in threads:
        t.start()
    time.sleep(2)
    during = {p.pid for p in _replicas(live)}
    for t in threads:
        t.join(JOB_TIMEOUT_S)
    assert [out[p].status_code for p in bodies] == [200, 200], [out[p].text for p in bodies]
    seq, par = (_record(live, out[p].json()) for p in bodies)
    assert par.one_chunk_on_full_replica and par.plan["n_chunks"] == 1
    assert {c.pid for c in seq.chunks} == {c.pid for c in par.chunks}  # the same replica…
    first, second = sorted([seq.chunks[0], par.chunks[0]], key=lambda c: c.start_ts)
    assert first.end_ts <= second.start_ts  # …one job after the other
    assert during == before == {p.pid for p in _replicas(live)}


@pytest.mark.slow
def test_live_soak(live):
    """30 requests from 4 clients on short texts: each answer a 200 or a 429 with
    Retry-After; the server's RSS after all of them within 10 % of its RSS after five."""
    lock = threading.Lock()
    todo = iter(range(SOAK_REQUESTS))
    answers: list[tuple[int, int, str | None]] = []
    rss: dict[str, int] = {}
    deadline = time.monotonic() + SOAK_LIMIT_S

    def client() -> None:
        with httpx.Client(base_url=live.base, timeout=JOB_TIMEOUT_S) as c:
            while time.monotonic() < deadline:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                path = "/api/generate" if i % 2 == 0 else "/api/generate_parallel"
                r = c.post(path, json={"text": SOAK_TEXTS[i % len(SOAK_TEXTS)]})
                with lock:
                    answers.append((i, r.status_code, r.headers.get("retry-after")))
                    if len(answers) == 5:
                        rss["after_5"] = live.ps.memory_info().rss
                        _note_children(live)
                if r.status_code == 429:  # as a polite client does (capped: bounded time)
                    time.sleep(min(float(r.headers.get("retry-after") or 1), 10.0))

    threads = [threading.Thread(target=client) for _ in range(SOAK_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SOAK_LIMIT_S + JOB_TIMEOUT_S)
    rss["end"] = live.ps.memory_info().rss
    _note_children(live)
    assert len(answers) == SOAK_REQUESTS, f"only {len(answers)} answered in {SOAK_LIMIT_S} s"
    statuses = [s for _, s, _ in answers]
    assert set(statuses) <= {200, 429}, answers
    assert statuses.count(200) >= SOAK_CLIENTS
    assert all(int(ra) >= 1 for _, s, ra in answers if s == 429)
    growth = rss["end"] / rss["after_5"]
    print(f"soak: {statuses.count(200)}×200, {statuses.count(429)}×429; server RSS "
          f"{rss['after_5'] / 2**20:.0f} → {rss['end'] / 2**20:.0f} MiB ({growth:.3f}×)")  # fmt: skip
    assert growth <= 1.10


@pytest.mark.slow
def test_live_stop_leaves_no_process(live):
    """Last of the live tests: Ctrl-C stops the server while a job runs, and every process
    it ever had — replicas, the resource tracker, ffmpeg — is gone with it."""
    _note_children(live)
    assert len(live.seen) >= 4  # three replicas and the multiprocessing resource tracker
    # stopped in the middle of a job, the hard case
    text = "Hello there, this sentence keeps the replicas busy for a while. " * 3

    def request() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server goes away under it
            _post(live, "/api/generate", {"text": text})

    job = threading.Thread(target=request)
    job.start()
    deadline = time.monotonic() + 60
    while httpx.get(f"{live.base}/api/health").json()["queue"]["running"] == 0:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    time.sleep(1.0)
    _note_children(live)
    live.proc.send_signal(signal.SIGINT)
    assert live.proc.wait(timeout=60) == 0, _tail(live.log)
    deadline = time.monotonic() + 15
    while left := [p for p in live.seen.values() if _alive(p)]:
        assert time.monotonic() < deadline, f"left behind: {[(p.pid, p.cmdline()) for p in left]}"
        time.sleep(0.2)
    job.join(30)
