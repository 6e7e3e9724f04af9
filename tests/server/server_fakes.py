"""The server tests' stand-in workbench (instant, or held on a gate) and shared helpers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from lipbench.errors import LipbenchError
from lipbench.jobs import UNTRAINED_LABEL, UNTRAINED_NOTE, output_names, resolve_job
from lipbench.record import (
    ModelLoad,
    Outputs,
    ReplicaRow,
    RunRecord,
    Timings,
    TTSInfo,
    WeightsRow,
)

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


def jobs_dir(cfg: dict[str, Any]) -> Path:
    return Path(cfg["results_dir"]) / "server"
