"""The server tests' stand-in workbench (instant, or held on a gate) and shared helpers."""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipbench.errors import LipbenchError
from lipbench.ffmpeg import ffmpeg_exe
from lipbench.jobs import UNTRAINED_LABEL, UNTRAINED_NOTE, resolve_job
from lipbench.outputs import output_names
from lipbench.record import (
    ModelLoad,
    Outputs,
    RenderChoice,
    ReplicaRow,
    RunRecord,
    StreamInfo,
    Timings,
    TTSInfo,
    WeightsRow,
)
from lipbench.request import Hooks

TINY_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64
BASE = "http://127.0.0.1:3000"  # an allowed Host for in-process clients

# --- a stand-in workbench ---------------------------------------------------------------------


def _weights(model: str, i: int) -> WeightsRow:
    return WeightsRow(model, None, "seeded-random", None, i, False)


def replica_row(i: int, model: str, threads: int = 1) -> ReplicaRow:
    render = RenderChoice(
        backend="torch", precision="fp32", effective_precision="fp32", exact=True,
        batch_size=16, threads=threads, fidelity=None, chosen_by="config", engine={},
        calibration=None,
    )  # fmt: skip
    return ReplicaRow(i, model, "cpu", 1000 + i, 0.0, _weights(model, i), render)


class FakePool:
    def __init__(self, models: list[str]):
        self.models = models

    def replica_rows(self) -> list[ReplicaRow]:
        return [replica_row(i, m) for i, m in enumerate(self.models)]


def fake_timings(spoke: bool) -> Timings:
    """As the real one: the latency fields are always set (a plain run plays when done)."""
    return Timings(tts=0.1 if spoke else 0.0, convert=0.1, detect=0.0, mel=0.05, split=0.05,
                   infer=1.0, merge=0.1, total=1.4, first_frame_s=0.3, first_playable_s=1.4,
                   stall_s=0.0, latency_origin="request")  # fmt: skip


def fake_record(strategy: str, models: list[str], out: Path, spoke: bool) -> RunRecord:
    names = output_names(out)
    return RunRecord(
        record_version=2, engine="pool", strategy=strategy, models=models,
        weights={m: _weights(m, i) for i, m in enumerate(models)}, weights_trained=False,
        weights_note=UNTRAINED_NOTE, label=UNTRAINED_LABEL,
        timings=fake_timings(spoke),
        plan={"n_chunks": 1, "chunks": []}, chunks=[], seams=[], frames=25, fps=25.0,
        audio_duration_s=1.0, render_fps=25.0, replicas=[], device="cpu", threads_per_replica=1,
        one_chunk_on_full_replica=False,
        outputs=Outputs(str(names.video), str(names.record), str(names.audio), None, str(names.plan)),
        model_load=ModelLoad(False, [0.0], "fake"), cpu={}, restarts=0,
        tts=TTSInfo("piper", "en", 22050, 5) if spoke else None, render_options={},
        snakemake_benchmarks={}, machine={}, versions={}, created="",
    )  # fmt: skip


@functools.cache
def real_segments() -> list[bytes]:
    """Two real 1 s MPEG-TS segments (64×64 test picture + a tone, H.264/AAC), made once."""
    folder = Path(tempfile.mkdtemp(prefix="lipbench-fake-ts-"))
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
           "testsrc=size=64x64:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
           "-t", "2", "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
           "-f", "segment", "-segment_time", "1", "-segment_format", "mpegts",
           str(folder / "seg_%05d.ts")]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    segs = [p.read_bytes() for p in sorted(folder.glob("seg_*.ts"))]
    shutil.rmtree(folder, ignore_errors=True)
    assert len(segs) == 2, "ffmpeg made an unexpected number of test segments"
    return segs


def write_playlist(stream_dir: Path, uris: list[str], ended: bool) -> Path:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-PLAYLIST-TYPE:EVENT"]  # fmt: skip
    for uri in uris:
        lines += ["#EXTINF:1.000,", uri]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    path = stream_dir / "index.m3u8"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


STREAM_URIS = ["chunk_000/seg_00000.ts", "chunk_001/seg_00000.ts"]


@dataclass
class FakeRequest:
    """What ``FakeWorkbench.request`` builds: the keyword arguments as given."""

    out: Any
    kw: dict[str, Any]
    hooks: Hooks


class FakeWorkbench:
    """Quacks like pipeline.Workbench: writes the files a job publishes (the WAV holds the
    text, or a copy of the audio it was given). ``gate`` (when cleared) holds every job;
    ``error`` makes jobs raise. Not cancellable: it has no ``cancels_jobs``."""

    def __init__(self, cfg: dict[str, Any], gated: bool = False):
        self.cfg = cfg
        self.gate = threading.Event()
        self.first_gate = threading.Event()  # stream jobs: held before their first segment
        self.first_gate.set()
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

    def _hold(self, kw: dict[str, Any], gate: threading.Event | None = None) -> None:
        assert (gate or self.gate).wait(30), "test gate never released"

    def request(self, out: Any, *, hooks: Hooks | None = None, **kw: Any) -> FakeRequest:
        return FakeRequest(out, kw, hooks or Hooks())

    def generate(self, req: FakeRequest) -> RunRecord:
        kw = dict(req.kw)
        text, audio = kw.pop("text", None), kw.pop("audio", None)
        if req.hooks.should_stop is not None:
            kw["should_stop"] = req.hooks.should_stop
        if req.hooks.on_stream is not None:
            kw["on_stream"] = req.hooks.on_stream
        return self._generate(req.out, text, audio, **kw)

    def _generate(
        self, out: Any, text: str | None = None, audio: Any = None, **kw: Any
    ) -> RunRecord:
        names = output_names(out)
        self.calls.append({"out": names.video, "text": text, "audio": audio, **kw})
        if kw.get("stream"):
            return self._generate_streamed(names, text, audio, kw)
        names.side.mkdir(parents=True)  # as the real one: a folder exists while the job runs
        self._hold(kw)
        if self.error is not None:
            raise self.error
        return self._finish(names, names, text, audio, kw)

    def _finish(self, stage: Any, names: Any, text: str | None, audio: Any,
                kw: dict[str, Any]) -> RunRecord:  # fmt: skip
        stage.audio.write_bytes(Path(audio).read_bytes() if audio else text.encode())
        stage.video.write_bytes(TINY_MP4)
        rec = fake_record(kw["strategy"], list(self.job(kw["strategy"]).models), names.video,
                          spoke=text is not None)  # fmt: skip
        if kw.get("stream"):
            rec.timings.first_playable_s, rec.timings.stall_s = 0.5, 0.25
            rec.stream = StreamInfo(str(names.side / "stream" / "index.m3u8"), 1.0, 2,
                                    [0.5, 1.75], [1.0, 1.0])  # fmt: skip
        rec.write(stage.record)
        self.finished.append(names.video.parent.name)
        return rec

    def _generate_streamed(self, names: Any, text: str | None, audio: Any,
                           kw: dict[str, Any]) -> RunRecord:  # fmt: skip
        """As the real one: the stream grows in a hidden staging folder (``on_stream`` once
        its first segment is listed), which is moved into place at the end. ``first_gate``
        holds the job before its first segment, ``gate`` after it."""
        names.video.parent.mkdir(parents=True)
        stage = output_names(names.video.parent / ".result.staging-1-fake" / names.video.name)
        stream = stage.side / "stream"
        segs = real_segments()
        try:
            self._hold(kw, self.first_gate)
            if self.error is not None:
                raise self.error
            (stream / "chunk_000").mkdir(parents=True)
            (stream / "chunk_000" / "seg_00000.ts").write_bytes(segs[0])
            (stream / "chunk_001").mkdir()
            (stream / "chunk_001" / "seg_00000.ts").write_bytes(segs[1])  # written, not listed
            kw["on_stream"](write_playlist(stream, STREAM_URIS[:1], ended=False))
            self._hold(kw)
            write_playlist(stream, STREAM_URIS, ended=True)
            rec = self._finish(stage, names, text, audio, kw)
            stage.side.rename(names.side)
            stage.video.replace(names.video)
            stage.record.replace(names.record)
            return rec
        finally:
            shutil.rmtree(stage.video.parent, ignore_errors=True)

    def close(self) -> None:
        self.closed = True


class CancellableWorkbench(FakeWorkbench):
    """Has the hook: ``Hooks.should_stop`` stops it at the next 'batch' once it is true."""

    cancels_jobs = True

    def _generate(self, out: Any, text: str | None = None, audio: Any = None,
                  should_stop: Any = None, **kw: Any) -> RunRecord:  # fmt: skip
        self.cancel_seen = should_stop
        return super()._generate(out, text, audio, should_stop=should_stop, **kw)

    def _hold(self, kw: dict[str, Any], gate: threading.Event | None = None) -> None:
        deadline = time.monotonic() + 30
        while not (gate or self.gate).wait(0.02):  # one 'batch'
            assert time.monotonic() < deadline, "test gate never released"
            if kw["should_stop"]():
                raise LipbenchError("job cancelled")


def start_uvicorn(config: Any) -> tuple[Any, threading.Thread, int]:
    """A uvicorn server on a thread, started (it fails the test if it does not start):
    (server, thread, port)."""
    import uvicorn

    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(500):
        if srv.started:
            break
        threading.Event().wait(0.02)
    assert srv.started, "uvicorn did not start"
    return srv, thread, srv.servers[0].sockets[0].getsockname()[1]


def jobs_dir(cfg: dict[str, Any]) -> Path:
    return Path(cfg["results_dir"]) / "server"


class FakePools:
    """``Workbench.pools``: leases recorded (by the job's text)."""

    def __init__(self) -> None:
        self.leased: list[str | None] = []

    @contextlib.contextmanager
    def lease(self, models: Any, threads: int, text: str | None = None) -> Iterator[None]:
        self.leased.append(text)
        yield


class LeasingWorkbench(FakeWorkbench):
    """As the real one: speech synthesis first (held on ``tts_gate``, deaf to the cancel
    flag, like an engine mid-sentence), then the replicas' lease, then the render."""

    def __init__(self, cfg: dict[str, Any], gated: bool = False):
        super().__init__(cfg, gated)
        self.pools = FakePools()
        self.tts_gate = threading.Event()
        self.in_tts: list[str | None] = []

    def _generate(self, out: Any, text: str | None = None, audio: Any = None, **kw: Any) -> RunRecord:  # fmt: skip
        self.in_tts.append(text)
        assert self.tts_gate.wait(30), "test TTS gate never released"
        with self.pools.lease(("gan",), 1, text):
            return super()._generate(out, text, audio, **kw)
