"""The web API: generation on real replicas, validation, video serving, limits, the queue.

Most tests use a stand-in workbench (instant, or blocked on a gate) so queue behaviour is
deterministic; one module-scoped server runs real jobs on short text.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from lipbench import server, video
from lipbench.errors import InputError, LipbenchError, TTSError
from lipbench.pipeline import Workbench

TINY_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64


class FakePool:
    def __init__(self, models: list[str]):
        self.models = models

    def replica_info(self) -> list[dict[str, Any]]:
        return [
            {
                "replica": i,
                "model": m,
                "threads": 1,
                "device": "cpu",
                "load_s": 0.0,
                "weights": {"name": m, "source": "seeded-random", "seed": i, "trained": False},
            }
            for i, m in enumerate(self.models)
        ]


class FakeWorkbench:
    """Quacks like pipeline.Workbench. ``gate`` (when set) holds every job until released;
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

    def models_for(self, strategy: str, models: list[str] | None) -> list[str]:
        return Workbench.models_for(self, strategy, models)  # type: ignore[arg-type]

    def pool(self, models: list[str], threads: int | None = None) -> FakePool:
        return FakePool(list(models))

    def generate(self, out_dir: Any, **kw: Any) -> dict[str, Any]:
        out = Path(out_dir)
        self.calls.append({"out_dir": out, **kw})
        assert self.gate.wait(30), "test gate never released"
        if self.error is not None:
            raise self.error
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.mp4").write_bytes(TINY_MP4)
        self.finished.append(out.name)
        models = self.models_for(kw["strategy"], None)
        return {
            "strategy": kw["strategy"],
            "models": models,
            "weights": {m: FakePool([m]).replica_info()[0]["weights"] for m in models},
            "weights_trained": False,
            "weights_note": "seeded-random",
            "timings": {
                "tts": 0.1,
                "convert": 0.1,
                "detect": 0.0,
                "split": 0.1,
                "infer": 1.0,
                "merge": 0.1,
                "total": 1.4,
            },  # fmt: skip
            "plan": {"n_chunks": 1, "chunks": []},
            "chunks": [],
            "frames": 25,
            "fps": 25.0,
            "audio_duration_s": 1.0,
        }

    def close(self) -> None:
        self.closed = True


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
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# --- real replicas ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory, make_config) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("server")
    cfg = make_config(root)
    app = server.create_app(cfg, warmup=False)
    with TestClient(app) as client:
        yield SimpleNamespace(client=client, cfg=cfg, app=app)
    assert app.state.lipbench.closed


@pytest.fixture(scope="module")
def seq_result(real) -> dict[str, Any]:
    r = real.client.post("/api/generate", json={"text": "Hello there, how are you?", "lang": "en"})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def par_result(real) -> dict[str, Any]:
    body = {"text": "Привет, мир! Как дела?", "lang": "ru", "chunks": 2}
    r = real.client.post("/api/generate_parallel", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _check_record_response(real, res: dict[str, Any]) -> dict[str, Any]:
    assert re.fullmatch(r"[0-9a-f]{32}", res["id"])
    assert res["video_url"] == f"/videos/{res['id']}.mp4"
    assert set(res["timings"]) >= {"tts", "convert", "split", "infer", "merge", "total"}
    assert res["timings"]["total"] >= res["timings"]["infer"] > 0
    run_json = Path(real.cfg["results_dir"]) / "server" / res["id"] / "run.json"
    record = json.loads(run_json.read_text())
    # the response is the run record's numbers, not a separate measurement
    assert res["timings"] == pytest.approx(record["timings"])
    assert res["plan"] == record["plan"]
    assert res["weights"] == record["weights"]
    return record


def test_sequential_endpoint_real(real, seq_result):
    rec = _check_record_response(real, seq_result)
    assert seq_result["strategy"] == "sequential" == rec["strategy"]
    assert seq_result["models"] == ["gan"]
    assert seq_result["plan"]["n_chunks"] == 1
    assert seq_result["weights"]["gan"]["source"] == "seeded-random"
    assert seq_result["weights_trained"] is False and "UNTRAINED" in seq_result["weights_note"]
    assert seq_result["tts"]["engine"] == "piper"


def test_parallel_endpoint_real(real, par_result):
    _check_record_response(real, par_result)
    assert par_result["strategy"] == "parallel"
    assert par_result["models"] == ["gan", "nogan"]
    assert par_result["plan"]["n_chunks"] == 2
    assert [c["model"] for c in par_result["chunks"]] == ["gan", "nogan"]
    assert {c["replica"] for c in par_result["chunks"]} == {0, 1}
    assert par_result["tts"]["engine"] == "espeak" and par_result["tts"]["lang"] == "ru"


def test_video_is_served_whole_and_by_range(real, seq_result, tmp_path):
    r = real.client.get(seq_result["video_url"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers.get("accept-ranges") == "bytes"
    assert r.content[4:8] == b"ftyp"
    local = tmp_path / "got.mp4"
    local.write_bytes(r.content)
    n, _ = video.count_frames(local)
    assert n == seq_result["frames"]

    size = len(r.content)
    part = real.client.get(seq_result["video_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == r.content[100:200]
    tail = real.client.get(seq_result["video_url"], headers={"Range": f"bytes={size - 10}-"})
    assert tail.status_code == 206 and tail.content == r.content[-10:]


def test_replicas_are_started_once_and_shared(real, seq_result, par_result):
    wb = real.app.state.lipbench.wb
    # one sequential pool and one parallel pool, created at start-up and reused
    assert sorted(wb._pools) == sorted([(("gan",), None), (("gan", "nogan"), None)])
    info = real.client.get("/api/info").json()
    assert info["strategies"]["parallel"]["models"] == ["gan", "nogan"]
    assert [r["model"] for r in info["strategies"]["sequential"]["replicas"]] == ["gan"]
    assert info["weights_trained"] is False
    assert "ru" in info["languages"] and "en" in info["languages"]


def test_file_not_created_by_server_is_not_served(real, seq_result):
    stray_id = "ab" * 16
    stray = Path(real.cfg["results_dir"]) / "server" / stray_id
    stray.mkdir(parents=True)
    (stray / "result.mp4").write_bytes(TINY_MP4)
    assert real.client.get(f"/videos/{stray_id}.mp4").status_code == 404


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field", "needle"),
    [
        ("/api/generate", {"text": "hi", "lang": "xx"}, "lang", "'xx' is not supported"),
        ("/api/generate", {"text": "hi", "lang": "ru", "engine": "piper"}, "lang", "espeak"),
        ("/api/generate", {"text": "a" * 41, "lang": "en"}, "text", "limit of 40"),
        ("/api/generate", {"text": "   ", "lang": "en"}, "text", "empty"),
        ("/api/generate", {"lang": "en"}, "text", "required"),
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
    assert needle in data["detail"]
    assert any(e["field"] == field and needle in e["message"] for e in data["errors"])
    assert not fake_wb.calls  # nothing was queued


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
    assert fake_wb.calls[0]["chunks"] is None
    r = fake_client.post(
        "/api/generate_parallel", json={"text": "Привет", "lang": "ru", "chunks": 2}
    )
    assert r.status_code == 200
    assert fake_wb.calls[1]["strategy"] == "parallel" and fake_wb.calls[1]["chunks"] == 2
    assert fake_client.get(r.json()["video_url"]).content == TINY_MP4


# --- video ids ----------------------------------------------------------------------------


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


def test_traversal_to_a_real_file_is_404(fake_client, fake_cfg):
    """Even when the target exists inside the server's own folder."""
    made = fake_client.post("/api/generate", json={"text": "Hello"}).json()
    rel = f"{made['id']}/result.mp4".replace("/", "%2F")
    assert fake_client.get(f"/videos/{rel}").status_code == 404
    assert fake_client.get(f"/videos/{made['id']}%2Fresult.mp4").status_code == 404
    assert fake_client.get(made["video_url"]).status_code == 200


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

        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
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
    assert not any((Path(fake_cfg["results_dir"]) / "server").iterdir())
    assert fake_client.get("/api/health").json()["queue"]["running"] == 0


def test_unknown_route_and_method_are_json(fake_client):
    r = fake_client.get("/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = fake_client.get("/api/generate")
    assert r.status_code == 405 and "detail" in r.json()


# --- page and docs --------------------------------------------------------------------------


def test_page_and_its_assets_are_local(fake_client):
    page = fake_client.get("/parallel_test")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    for needle in ('id="compare"', 'id="panel-parallel"', 'id="panel-sequential"', "<video"):
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


def test_openapi_docs(fake_client):
    spec = fake_client.get("/openapi.json").json()
    assert {"/api/generate", "/api/generate_parallel", "/videos/{video_id}.mp4"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/api/generate"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("GenerateRequest")
    docs = fake_client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    if server._swagger_assets() is not None:  # offline Swagger UI when the bundle is installed
        assert "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert fake_client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


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
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
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


@pytest.fixture
def gated(fake_cfg) -> Iterator[tuple[Any, FakeWorkbench]]:
    wb = FakeWorkbench(fake_cfg, gated=True)
    app = server.create_app(fake_cfg, workbench=wb, warmup=False)
    app.state.lipbench.start()
    yield app, wb
    wb.gate.set()
    app.state.lipbench.close()


def test_queue_full_is_429_with_retry_after(gated):
    app, wb = gated
    q = app.state.lipbench.queue

    async def go() -> tuple[list[httpx.Response], httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
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
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    assert [r.status_code for r in done] == [200, 200]
    assert [c["text"] for c in wb.calls] == ["one", "two"]  # the refused job never ran
    assert q.running == 0 and q.waiting == 0


def test_waiting_job_of_a_departed_client_never_runs(gated):
    app, wb = gated
    q = app.state.lipbench.queue

    async def go() -> tuple[httpx.Response, list[dict[str, Any]]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post("/api/generate", json={"text": "stays"}))
            await _until(lambda: q.running == 1)
            leave = asyncio.Event()
            gone = asyncio.create_task(
                _asgi_post(app, "/api/generate", {"text": "leaves"}, leave)()
            )
            await _until(lambda: q.waiting == 1)
            leave.set()
            sent = await asyncio.wait_for(gone, 5)
            assert q.waiting == 0 and q.cancelled == 1  # its place is given up at once
            wb.gate.set()
            return await first, sent

    first, _ = asyncio.run(go())
    assert first.status_code == 200
    assert [c["text"] for c in wb.calls] == ["stays"]


def test_running_job_of_a_departed_client_releases_its_slot(gated, fake_cfg):
    app, wb = gated
    state = app.state.lipbench
    q = state.queue

    async def go() -> httpx.Response:
        leave = asyncio.Event()
        gone = asyncio.create_task(_asgi_post(app, "/api/generate", {"text": "leaves"}, leave)())
        await _until(lambda: len(wb.calls) == 1)
        leave.set()
        await asyncio.wait_for(gone, 5)
        # the thread still renders: the slot stays taken so replicas are never shared
        assert q.running == 1 and q.abandoned == 1
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            nxt = asyncio.create_task(client.post("/api/generate", json={"text": "next"}))
            await _until(lambda: q.waiting == 1)
            wb.gate.set()  # the abandoned job finishes, then the next one runs
            return await nxt

    nxt = asyncio.run(go())
    assert nxt.status_code == 200
    assert [c["text"] for c in wb.calls] == ["leaves", "next"]
    abandoned_dir = wb.calls[0]["out_dir"]
    assert not abandoned_dir.exists()  # its output was discarded
    assert list(state.videos) == [nxt.json()["id"]]
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
        q.close()

    asyncio.run(go())


# --- lipbench serve -------------------------------------------------------------------------


def test_main_binds_loopback_by_default(monkeypatch, fake_cfg):
    import uvicorn

    seen: dict[str, Any] = {}
    wb = FakeWorkbench(fake_cfg)
    real_create = server.create_app
    monkeypatch.setattr(
        server, "create_app", lambda cfg: real_create(cfg, workbench=wb, warmup=False)
    )
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setattr(server, "check_port", lambda host, port: None)
    assert server.main(SimpleNamespace(host=None, port=None), fake_cfg) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == fake_cfg["server"]["port"]
    assert seen["app"].state.lipbench.started and seen["app"].state.lipbench.closed
    assert server.main(SimpleNamespace(host=None, port=4321), fake_cfg) == 0
    assert seen["port"] == 4321


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LipbenchError, match=f"127.0.0.1:{port}.*--port"):
            server.check_port("127.0.0.1", port)
