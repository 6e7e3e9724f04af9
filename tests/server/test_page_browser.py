"""The page in a real browser (Chromium through Playwright) against the server with the
stand-in workbench (fast: no rendering): what the page says about a one-chunk parallel job,
which threads it says the job ran on, what it shows while a stream job waits for its first
frame, and the two players' size. Screenshot: results/browser/parallel_test_page.png.
(tests/server/test_browser.py runs the real server end to end.)"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from server_fakes import FakeWorkbench, start_uvicorn

from lipbench import server
from lipbench.ffmpeg import ffmpeg_exe
from lipbench.record import ChunkRow, RunRecord

pytestmark = [pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "results" / "browser" / "parallel_test_page.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SIZES = {"parallel": (128, 64), "sequential": (64, 96)}  # two shapes: the players stay one size
TIMEOUT_MS = 30_000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    what = "Chromium is not installed: run `apt-get install -y chromium` (as root)"
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)
    raise AssertionError("unreachable")


@functools.cache
def _mp4(width: int, height: int) -> bytes:
    """A real 1 s H.264/AAC MP4 of this size."""
    folder = Path(tempfile.mkdtemp(prefix="lipbench-page-"))
    out = folder / "v.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc=size={width}x{height}:rate=25", "-f", "lavfi", "-i",
                    "sine=frequency=440", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-movflags", "+faststart", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    data = out.read_bytes()
    shutil.rmtree(folder, ignore_errors=True)
    return data


def _chunk_row(threads: int) -> ChunkRow:
    """Chunk 0 of 25 frames on replica 0 (gan) with ``threads`` threads; times made up."""
    given: dict[str, Any] = dict(chunk=0, model="gan", replica=0, pid=1, threads=threads,
                                 device="cpu", attempts=1, frame_start=0, frame_end=25,
                                 frames=25, fps=25.0, wall_s=1.0, end_offset_s=1.0)  # fmt: skip
    kw = {f.name: given.get(f.name, 0.0) for f in dataclasses.fields(ChunkRow)
          if f.default is dataclasses.MISSING}  # fmt: skip
    return ChunkRow(**kw)


class PageWorkbench(FakeWorkbench):
    """A 16 s clip the parallel job renders as one chunk on the 2-thread replica (a one-chunk
    parallel job runs on the sequential pool's full replica), with a playable video."""

    def _finish(self, stage: Any, names: Any, text: str | None, audio: Any,
                kw: dict[str, Any]) -> RunRecord:  # fmt: skip
        rec = super()._finish(stage, names, text, audio, kw)
        stage.video.write_bytes(_mp4(*SIZES[kw["strategy"]]))
        rec.audio_duration_s, rec.frames = 16.0, 400
        rec.plan = {"n_chunks": 1, "chunks": []}
        rec.chunks = [_chunk_row(threads=2)]
        rec.write(stage.record)
        return rec


@pytest.fixture
def page_server(fake_cfg) -> Iterator[tuple[str, PageWorkbench]]:
    wb = PageWorkbench(fake_cfg)
    app = server.create_app(fake_cfg, workbench=wb, warmup=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    srv, thread, port = start_uvicorn(config)
    yield f"http://127.0.0.1:{port}", wb
    wb.gate.set()
    wb.first_gate.set()
    srv.should_exit = True
    thread.join(30)


def _heights(page: Any) -> list[float]:
    return page.evaluate(
        "() => ['parallel', 'sequential'].map((s) => document.querySelector("
        "`#panel-${s} video`).getBoundingClientRect().height)"
    )


def _wait_result(page: Any, strategy: str) -> None:
    p = f"#panel-{strategy}"
    page.wait_for_selector(f"{p} .result:not([hidden]), {p} .error:not([hidden])")
    assert page.is_hidden(f"{p} .error"), page.text_content(f"{p} .error")


def test_the_page_tells_what_each_job_did(page_server):
    from playwright.sync_api import sync_playwright

    base, wb = page_server
    chromium = _chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{base}/parallel_test")
            page.wait_for_selector("#panel-parallel button.generate:not([disabled])")
            problems: list[str] = []  # every check runs; all failures are reported together
            h = _heights(page)
            if not (h[0] > 100 and abs(h[0] - h[1]) <= 1):
                problems.append(f"players of different heights before any video: {h}")
            for s in ("parallel", "sequential"):
                page.fill(f"#panel-{s} .text", "Hello there")  # the test config's 40 chars

            # Chunks 1 on 16 s of audio: one chunk because it was asked for, not "short audio"
            page.select_option("#panel-parallel .chunks", "1")
            page.click("#panel-parallel button.generate")
            _wait_result(page, "parallel")
            meta = page.text_content("#panel-parallel .meta")
            if "shorter than" in meta or "as asked" not in meta:
                problems.append(f"one-chunk note: {meta}")
            # the threads the chunk ran on, from the record (the fake's pool says 1)
            weights = page.text_content("#panel-parallel .weights")
            if "gan×2 thr" not in weights or "×1 thr" in weights:
                problems.append(f"threads: {weights}")

            page.click("#panel-sequential button.generate")
            _wait_result(page, "sequential")
            for s in ("parallel", "sequential"):
                page.wait_for_function(f"() => document.querySelector('#panel-{s} video')"
                                       ".readyState >= 2")  # fmt: skip
            h = _heights(page)  # a 2:1 and a 2:3 video
            if abs(h[0] - h[1]) > 1:
                problems.append(f"players of different heights: {h}")

            # Stream: while the job waits for its first segment, a moving "waiting" line
            page.check("#stream")
            wb.first_gate.clear()
            page.click("#panel-parallel button.generate")
            page.wait_for_function("() => document.querySelector('#panel-parallel .state')"
                                   ".textContent.includes('first segment')")  # fmt: skip
            waiting = page.text_content("#panel-parallel .latency")
            if not waiting.strip():
                problems.append("an empty latency bar while waiting")
            animation = page.evaluate("() => getComputedStyle(document.querySelector("
                                      "'#panel-parallel .latency')).animationName")  # fmt: skip
            if animation != "latency-wait":
                problems.append(f"no indeterminate state while waiting (animation {animation})")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT.with_name("parallel_test_page_waiting.png")))
            wb.first_gate.set()
            page.wait_for_function("() => document.querySelector('#panel-parallel .state')"
                                   ".textContent.startsWith('server total')")  # fmt: skip
            assert "first playable frame" in page.text_content("#panel-parallel .latency")
            assert "pending" not in page.get_attribute("#panel-parallel .latency", "class")
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert not problems, "\n".join(problems)
        finally:
            browser.close()
