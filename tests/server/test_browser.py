"""A real browser on the real server: Chromium (Debian's, driven by Playwright) opens
/parallel_test from a live ``lipbench serve``, presses Compare (3 pairs), waits until both
videos can play, and checks that every render used the same WAV (one synthesis; the same
sha256 in the responses and in the audio files the run records name), that the speed-up is
the median of the pairs' render-only ratios, and that the page gives its noise verdict.
Saves a screenshot to results/browser/parallel_test.png.

Stream mode: Compare with Stream on; each panel's ``<video>`` must be playing
(``currentTime`` > 0) while the server still says its job is running, for both strategies;
then the panels show the first playable frame and the stall time beside the total.
Screenshot: results/browser/parallel_test_stream.png."""

from __future__ import annotations

import contextlib
import hashlib
import json
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

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "results" / "browser" / "parallel_test.png"
STREAM_SCREENSHOT = REPO / "results" / "browser" / "parallel_test_stream.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TEXT = "Привет! Это короткая проверка."
PAIRS = 3
# about 6 s of speech (150 frames): on this 2-core machine each job renders for many seconds
# after its first 1 s segment is ready, so there is time to see it play while it renders
STREAM_TEXT = "Hello there. This video starts to play while the rest of it is still being rendered."
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
def live_server(chromium, tmp_path_factory, make_config) -> Iterator[tuple[str, Path]]:
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
        yield base, root
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

    base, root = live_server
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/parallel_test")
            page.wait_for_selector("#compare:not([disabled])")
            badge = page.locator("#weights-badge")
            assert "untrained weights (seeded random)" in badge.inner_text()

            page.fill("#panel-parallel .text", TEXT)
            page.select_option("#panel-parallel .lang", "ru")
            page.select_option("#panel-parallel .chunks", "2")
            page.select_option("#pairs", str(PAIRS))
            calls = _compare(page)

            for strategy in ("parallel", "sequential"):
                page.wait_for_function(_video_playable(strategy), timeout=JOB_TIMEOUT_MS)
            _check_same_audio(calls, root)
            _check_page(page, calls)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert not errors, f"browser console errors: {errors}"


def _compare(page: Any) -> list[dict[str, Any]]:
    """Click Compare; wait for its 2 × PAIRS jobs; return them in order, each with its
    endpoint, request body and response (the server's run record)."""
    seen: list[Any] = []  # Playwright responses; bodies are read after the wait
    page.on("response", lambda r: seen.append(r) if re.search(r"/api/generate(_parallel)?$", r.url) else None)  # fmt: skip
    page.click("#compare")
    deadline = time.monotonic() + 2 * PAIRS * JOB_TIMEOUT_MS / 1000
    while len(seen) < 2 * PAIRS or page.locator("#compare[disabled]").count():
        assert time.monotonic() < deadline, f"Compare did not finish: {len(seen)} jobs"
        assert all(r.status == 200 for r in seen), seen[-1].text()
        page.wait_for_timeout(250)
    calls = [{"endpoint": r.url.rsplit("/", 1)[-1], "status": r.status,
              "request": r.request.post_data_json, "response": r.json()} for r in seen]  # fmt: skip
    assert len(calls) == 2 * PAIRS and all(c["status"] == 200 for c in calls)
    # one job at a time, the order alternating: (par, seq), (seq, par), (par, seq)
    order = [c["endpoint"] for c in calls]
    expected = []
    for i in range(PAIRS):
        pair = ["generate_parallel", "generate"]
        expected += pair if i % 2 == 0 else pair[::-1]
    assert order == expected
    # only the first job synthesises; every later one renders its WAV by audio_id
    first = calls[0]
    assert first["request"]["text"] == TEXT and first["request"]["chunks"] == 2
    for c in calls[1:]:
        assert c["request"].get("audio_id") == first["response"]["audio_id"]
        assert "text" not in c["request"]
        assert c["response"]["audio_from"] == first["response"]["id"]
        assert c["response"]["timings"]["tts"] == 0.0
    return calls


def _check_same_audio(calls: list[dict[str, Any]], root: Path) -> None:
    """Both strategies rendered identical audio: one hash in every response, and the audio
    files that the run records on disk name hash to it."""
    hashes = {c["response"]["audio_sha256"] for c in calls}
    assert len(hashes) == 1
    for c in calls:
        rec_path = root / "results" / "server" / c["response"]["id"] / "result.run.json"
        rec = json.loads(rec_path.read_text())
        audio = Path(rec["outputs"]["audio"])
        assert hashlib.sha256(audio.read_bytes()).hexdigest() in hashes
        assert rec["frames"] == calls[0]["response"]["frames"]


def _check_page(page: Any, calls: list[dict[str, Any]]) -> None:
    last = {}
    for c in calls:
        last["parallel" if c["endpoint"] == "generate_parallel" else "sequential"] = c["response"]
    par, seq = last["parallel"], last["sequential"]
    assert par["plan"]["n_chunks"] == 2 and par["models"] == ["gan", "nogan"]
    assert seq["plan"]["n_chunks"] == 1 and seq["models"] == ["gan"]

    # each panel shows its latest job: server total, render time, its own video
    for strategy, res in last.items():
        panel = page.locator(f"#panel-{strategy}")
        total_cell = panel.locator("table.timings tr.total td.num").inner_text()
        assert total_cell == f"{res['timings']['total']:.2f}"
        render_cell = panel.locator("table.timings tr.render td.num").inner_text()
        assert render_cell == f"{res['render_s']:.2f}"
        src = panel.locator("video").get_attribute("src")
        assert src == res["video_url"]
        duration = panel.locator("video").evaluate("v => v.duration")
        assert abs(duration - res["audio_duration_s"]) < 0.25

    # the headline is the median of the pairs' render-only ratios (sequential ÷ parallel)
    pars = [c["response"] for c in calls if c["endpoint"] == "generate_parallel"]
    seqs = [c["response"] for c in calls if c["endpoint"] == "generate"]
    ratios = sorted(s["render_s"] / p["render_s"] for p, s in zip(pars, seqs, strict=True))
    shown = page.locator("#speedup-value").inner_text()
    match = re.match(r"([0-9]+\.[0-9]{2})×", shown)
    assert match, f"speedup text {shown!r}"
    assert float(match.group(1)) == pytest.approx(round(ratios[len(ratios) // 2], 2), abs=0.005)
    assert f"median of {PAIRS} pairs" in page.locator("#speedup-detail").inner_text()
    assert page.locator("#pairs-list li").count() == PAIRS
    # TTS apart from the speed-up, with the first job's own figure
    tts_text = page.locator("#speedup-tts").inner_text()
    assert f"tts {calls[0]['response']['timings']['tts']:.2f} s" in tts_text
    assert "same WAV" in tts_text
    # the noise verdict follows the pairs: disagreeing pairs are "within the noise"
    noise = page.locator("#speedup-noise").inner_text()
    disagree = ratios[0] <= 1 <= ratios[-1]
    assert ("Within the noise" in noise) == disagree
    assert (f"All {PAIRS} pairs agree" in noise) == (not disagree)
    # ... and so does a machine busy with other work (load well above the cores)
    jobs = [c["response"] for c in calls]
    busy = max(j["load_1m"] for j in jobs) > jobs[0]["cores"] + 1
    assert ("The machine was busy" in noise) == busy
    if disagree or busy:
        assert "⚡" not in shown


def _stream_job_id(page: Any, strategy: str, deadline: float) -> str:
    while True:
        job_id = page.evaluate(f"() => document.getElementById('panel-{strategy}').dataset.streamJob")  # fmt: skip
        if job_id:
            return job_id
        assert time.monotonic() < deadline, f"no {strategy} stream job started"
        page.wait_for_timeout(100)


def _plays_while_running(page: Any, base: str, strategy: str, deadline: float) -> dict[str, Any]:
    """Poll until the panel's video has played (currentTime > 0, read first) while the job's
    status (read after it) still says running; fail if the job ends before that."""
    job_id = _stream_job_id(page, strategy, deadline)
    current = f"() => document.querySelector('#panel-{strategy} video').currentTime"
    while True:
        played = page.evaluate(current)
        status = httpx.get(f"{base}/api/stream/jobs/{job_id}", timeout=5).json()
        if played > 0 and status["state"] == "running":
            return {"id": job_id, "played": played, "status": status}
        assert status["state"] in ("queued", "running"), (
            f"{strategy} job ended ({status['state']}) before its video played "
            f"(currentTime {played}): {status.get('error')}"
        )
        assert time.monotonic() < deadline, f"{strategy} video never played while rendering"
        page.wait_for_timeout(100)


def test_stream_plays_while_rendering(chromium, live_server):
    from playwright.sync_api import sync_playwright

    base, root = live_server
    errors: list[str] = []
    starts: list[Any] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: starts.append(r) if "/api/stream/generate" in r.url else None)  # fmt: skip
            page.goto(f"{base}/parallel_test")
            page.wait_for_selector("#compare:not([disabled])")
            page.check("#stream")
            page.fill("#panel-parallel .text", STREAM_TEXT)
            page.select_option("#panel-parallel .lang", "en")
            page.select_option("#panel-parallel .chunks", "2")
            page.select_option("#pairs", "1")
            page.click("#compare")
            deadline = time.monotonic() + 2 * JOB_TIMEOUT_MS / 1000
            # one job at a time, parallel first (it synthesises the speech)
            seen = {s: _plays_while_running(page, base, s, deadline)
                    for s in ("parallel", "sequential")}  # fmt: skip
            page.wait_for_selector("#compare:not([disabled])", timeout=JOB_TIMEOUT_MS)
            results = {}
            for strategy, got in seen.items():
                status = httpx.get(f"{base}/api/stream/jobs/{got['id']}", timeout=5).json()
                assert status["state"] == "done", status
                results[strategy] = status["result"]
            _check_stream_page(page, results, starts)
            STREAM_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(STREAM_SCREENSHOT), full_page=True)
            _leaving_cancels(page, base, seen["sequential"]["id"])
        finally:
            browser.close()
    assert not errors, f"browser console errors: {errors}"


def _check_stream_page(page: Any, results: dict[str, Any], starts: list[Any]) -> None:
    par, seq = results["parallel"], results["sequential"]
    # the same WAV on both sides: the sequential job rendered the parallel job's audio
    bodies = [r.post_data_json for r in starts]
    assert [r.url.rsplit("/", 1)[-1] for r in starts] == ["generate_parallel", "generate"]
    assert bodies[0]["text"] == STREAM_TEXT and bodies[1] == {"audio_id": par["audio_id"]}
    assert seq["audio_sha256"] == par["audio_sha256"] and seq["audio_from"] == par["id"]
    assert par["plan"]["n_chunks"] == 2 and seq["plan"]["n_chunks"] == 1
    for strategy, res in results.items():
        t = res["timings"]
        assert res["latency_origin"] == "request" and res["stream"]["segments"] >= 2
        assert 0 < t["first_playable_s"] <= t["total"] and t["stall_s"] >= 0
        panel = page.locator(f"#panel-{strategy}")
        cell = panel.locator("table.timings tr.first-playable td.num").inner_text()
        assert cell == f"{t['first_playable_s']:.2f}"
        assert panel.locator("table.timings tr.stall td.num").inner_text() == f"{t['stall_s']:.2f}"
        line = panel.locator(".latency .server").inner_text()
        assert f"first playable frame {t['first_playable_s']:.2f} s" in line
        assert f"stall {t['stall_s']:.2f} s" in line and f"total {t['total']:.2f} s" in line
        assert "this browser: playing" in panel.locator(".latency .browser").inner_text()
        assert panel.locator("a.mp4").get_attribute("href") == res["video_url"]
    assert "first playable frame after the speech" in page.locator("#speedup-latency").inner_text()


def _leaving_cancels(page: Any, base: str, last_id: str) -> None:
    """A page left while its stream job runs cancels it (DELETE on pagehide), well before
    the server's own 30 s rule for unwatched jobs would."""
    page.click("#panel-sequential .generate")
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    job_id = last_id
    while job_id == last_id:
        job_id = _stream_job_id(page, "sequential", deadline)
    url = f"{base}/api/stream/jobs/{job_id}"
    while httpx.get(url, timeout=5).json()["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page.goto("about:blank")
    left = time.monotonic()
    while (status := httpx.get(url, timeout=5).json())["state"] == "running":
        assert time.monotonic() - left < 15, "leaving the page did not cancel its job"
        time.sleep(0.2)
    assert status["state"] == "cancelled", status
    assert "cancelled by its client" in status["error"]["detail"]
