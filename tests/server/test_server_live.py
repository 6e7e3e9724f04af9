"""`lipbench serve` as a process on loopback with real replicas: real jobs, the same audio on
both sides, ranges and HEAD, the Host allow-list, two jobs at once never on one replica, a
bounded soak, and a stop that leaves no process behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest
import yaml

from lipbench import video
from lipbench.jobs import UNTRAINED_LABEL
from lipbench.record import (
    RunRecord,
    read_record,
)

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
    numbers = {k: v for k, v in rec.timings.to_dict().items() if isinstance(v, int | float)}
    assert res["timings"] == pytest.approx(numbers)
    # latency counted from the request (not from the server's start), and reported apart
    assert rec.timings.latency_origin == res["latency_origin"] == "request"
    assert 0 < res["timings"]["first_frame_s"] <= res["timings"]["first_playable_s"]
    # the MP4 was ready before the response: within the job plus its wait (rounding apart)
    assert (
        res["timings"]["first_playable_s"] <= res["timings"]["total"] + res["queue_wait_s"] + 0.01
    )
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
    Retry-After; the server's RSS after all of them within 10 % of its RSS after five
    finished jobs."""
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
                    # after five finished jobs (429s answer at once, before any job has
                    # warmed the server's one-time caches: TTS voices, the face track)
                    if sum(s == 200 for _, s, _ in answers) == 5 and "after_5" not in rss:
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
    assert "after_5" in rss, f"only {statuses.count(200)} jobs finished"
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
