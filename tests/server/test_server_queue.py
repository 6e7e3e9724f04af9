"""The bounded job queue: 429 + Retry-After; a departed client's job dropped or cancelled;
`lipbench serve` in process: loopback by default, a clear error for a port in use."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from server_fakes import BASE, CancellableWorkbench, FakeWorkbench, jobs_dir

from lipbench import server
from lipbench.errors import LipbenchError

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


def test_submit_takes_its_place_at_once_and_gives_it_back_if_never_started():
    async def go() -> None:
        q = server.JobQueue(max_running=1, max_waiting=0)
        task = q.submit(lambda: "never")
        assert q.waiting == 1  # taken before the task ran a step
        with pytest.raises(server.QueueFull):
            q.submit(lambda: "refused")
        task.cancel()  # before its first step
        with pytest.raises(asyncio.CancelledError):
            await task
        assert q.waiting == 0 and q.running == 0 and q.stats()["cancelled"] == 1
        assert await q.submit(lambda: 7) == 7

    asyncio.run(go())
