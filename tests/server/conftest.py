"""Fixtures of the server tests: a small config, the stand-in workbench, a test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_fakes import BASE, FakeWorkbench

from lipbench import server


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
    wb.first_gate.set()


@pytest.fixture
def fake_client(fake_cfg, fake_wb) -> Iterator[TestClient]:
    app = server.create_app(fake_cfg, workbench=fake_wb, warmup=False)
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield client
