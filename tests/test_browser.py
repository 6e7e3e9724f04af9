"""A real browser on the real server: Chromium (Debian's, driven by Playwright) opens
/parallel_test from a live ``lipbench serve``, presses Compare, waits until both videos can
play, and checks the speedup against the server's own timings. Saves a screenshot to
results/browser/parallel_test.png."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "results" / "browser" / "parallel_test.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TEXT = "Привет! Это короткая проверка."
START_TIMEOUT_S = 240
JOB_TIMEOUT_MS = 240_000


def _missing(what: str) -> None:
    """Fail in CI (the browser test must run there), skip on a developer machine."""
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    _missing(
        "Chromium is not installed: run `apt-get install -y chromium` (as root; .ci/run does "
        "it in CI). Playwright's own browser download cannot work offline."
    )
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    """Checked before the server starts: no point starting it without a browser."""
    path = _chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed: pip install playwright (in .venv)")
    return path


@pytest.fixture(scope="module")
def live_server(chromium, tmp_path_factory, make_config) -> Iterator[str]:
    """`lipbench serve` as a subprocess on a free port, results under tmp; always stopped."""
    root = tmp_path_factory.mktemp("live")
    cfg = make_config(root)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    port = _free_port()
    log = (root / "server.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "lipbench.cli",
        "--config",
        str(config),
        "serve",
        "--port",
        str(port),
    ]
    # its own session, so the replicas it spawns can be stopped with it if it hangs
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, base, root / "server.log")
        yield base
    finally:
        _stop(proc)
        log.close()


def _wait_ready(proc: subprocess.Popen, base: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"lipbench serve exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/api/health", timeout=2).json().get("status") == "ok":
                return
        time.sleep(0.5)
    pytest.fail(f"lipbench serve not ready after {START_TIMEOUT_S} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown closes the pools
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test created
            proc.wait(timeout=10)


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def _video_playable(strategy: str) -> str:
    return (
        f"() => {{ const v = document.querySelector('#panel-{strategy} video');"
        " return v && v.readyState >= 2 && v.duration > 0; }"
    )


def test_compare_in_real_browser(chromium, live_server):
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{live_server}/parallel_test")
            page.wait_for_selector("#compare:not([disabled])")
            badge = page.locator("#weights-badge")
            assert "untrained weights (seeded random)" in badge.inner_text()

            page.fill("#panel-parallel .text", TEXT)
            page.select_option("#panel-parallel .lang", "ru")
            page.select_option("#panel-parallel .chunks", "2")
            responses = _compare(page)

            for strategy in ("parallel", "sequential"):
                page.wait_for_function(_video_playable(strategy), timeout=JOB_TIMEOUT_MS)
            page.wait_for_selector("#speedup:not([hidden])")
            _check_page(page, responses)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert not errors, f"browser console errors: {errors}"


def _compare(page: Any) -> dict[str, dict[str, Any]]:
    """Click Compare; return the two API responses (the server's run records)."""
    par_url = re.compile(r"/api/generate_parallel$")
    seq_url = re.compile(r"/api/generate$")
    events: list[tuple[str, str]] = []
    page.on("request", lambda r: events.append(("request", r.url)))
    page.on("response", lambda r: events.append(("response", r.url)))
    with page.expect_response(seq_url, timeout=JOB_TIMEOUT_MS) as seq_info:
        with page.expect_response(par_url, timeout=JOB_TIMEOUT_MS) as par_info:
            page.click("#compare")
    par, seq = par_info.value, seq_info.value
    # one after the other: the sequential request starts after the parallel one answered
    order = [(kind, url.rsplit("/", 1)[-1]) for kind, url in events if "/api/generate" in url]
    assert order == [
        ("request", "generate_parallel"),
        ("response", "generate_parallel"),
        ("request", "generate"),
        ("response", "generate"),
    ]
    assert par.status == 200 and seq.status == 200, (par.text(), seq.text())
    # both ran the same text, one after the other
    assert par.request.post_data_json["text"] == seq.request.post_data_json["text"] == TEXT
    return {"parallel": par.json(), "sequential": seq.json()}


def _check_page(page: Any, responses: dict[str, dict[str, Any]]) -> None:
    par, seq = responses["parallel"], responses["sequential"]
    assert par["plan"]["n_chunks"] == 2 and par["models"] == ["gan", "nogan"]
    assert seq["plan"]["n_chunks"] == 1 and seq["models"] == ["gan"]

    # each panel shows its server total in the timings table and plays its own video
    for strategy, res in responses.items():
        panel = page.locator(f"#panel-{strategy}")
        total_cell = panel.locator("table.timings tr.total td.num").inner_text()
        assert total_cell == f"{res['timings']['total']:.2f}"
        src = panel.locator("video").get_attribute("src")
        assert src == res["video_url"]
        duration = panel.locator("video").evaluate("v => v.duration")
        assert abs(duration - res["audio_duration_s"]) < 0.25

    # the speedup is sequential total / parallel total from the server's records
    expected = seq["timings"]["total"] / par["timings"]["total"]
    shown = page.locator("#speedup-value").inner_text()
    match = re.match(r"([0-9]+\.[0-9]{2})×", shown)
    assert match, f"speedup text {shown!r}"
    assert float(match.group(1)) == pytest.approx(round(expected, 2), abs=0.005)
    detail = page.locator("#speedup-detail").inner_text()
    assert f"sequential {seq['timings']['total']:.2f} s" in detail
    assert f"parallel {par['timings']['total']:.2f} s" in detail
