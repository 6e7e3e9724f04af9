"""The server's state: one Workbench (its warm pools), the job queue, the job store; the
start-up that warms them and the shutdown that stops every replica."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tts
from ..errors import LipbenchError
from ..jobs import STRATEGIES
from ..record import ReplicaRow
from .phase import watch_leases
from .queue import JobQueue
from .storage import JobStore
from .stream_jobs import StreamJobs

log = logging.getLogger("lipbench.server")

WARMUP_TEXT = "Hello there."


@dataclass
class ServerState:
    cfg: dict[str, Any]
    wb: Any  # pipeline.Workbench (or a test double with the same methods)
    owns_wb: bool
    warmup: bool
    store: JobStore
    queue: JobQueue
    streams: StreamJobs
    replicas: dict[str, list[ReplicaRow]] = field(default_factory=dict)
    started: bool = False
    closed: bool = False
    watches_leases: bool = False  # a job cancelled before its lease frees its slot at once

    @classmethod
    def from_config(cls, cfg: dict[str, Any], wb: Any, owns_wb: bool, warmup: bool) -> ServerState:
        srv = cfg["server"]
        store = JobStore(Path(cfg["results_dir"]) / "server", **srv["storage"])
        queue = JobQueue(srv["max_running"], srv["max_waiting"])
        # finished stream jobs are remembered about as long as the store keeps their files
        streams = StreamJobs(keep=store.max_jobs + srv["max_running"] + srv["max_waiting"])
        return cls(cfg, wb, owns_wb, warmup, store, queue, streams)

    @property
    def cancellable(self) -> bool:
        """Whether the workbench can stop a running job between stages and at a batch boundary
        (``request.Hooks.should_stop``)."""
        return bool(getattr(self.wb, "cancels_jobs", False))

    def models(self, strategy: str) -> list[str]:
        return list(self.wb.job(strategy).models)

    def start(self) -> None:
        """Index stored jobs; start each strategy's pool (replicas load their weights once)
        and log which weights each model uses; run one short job per strategy so that no
        request pays first-call costs (TTS voice load, mel front end, face detection)."""
        if self.started:
            return
        self.store.open()
        self.watches_leases = watch_leases(self.wb)
        for strategy in STRATEGIES:
            pool = self.wb.pool(self.models(strategy))  # threads: jobs.threads_per_replica
            self.replicas[strategy] = pool.replica_rows()
            for r in self.replicas[strategy]:
                log.info("%s replica %d: %s", strategy, r.replica, describe_replica(r))
        if self.warmup:
            for strategy in STRATEGIES:
                self._warm_up(strategy)
        self.started = True
        log.info("ready: %s", weights_summary(self.replicas))

    def _warm_up(self, strategy: str) -> None:
        out = self.store.warmup_video(strategy)
        chunks = len(self.models(strategy)) if strategy == "parallel" else None
        t0 = time.perf_counter()
        try:
            self.wb.generate(self.wb.request(out, text=WARMUP_TEXT, lang="en", strategy=strategy,
                                             chunks=chunks, progress=False))  # fmt: skip
            log.info("warm-up %s job: %.1f s", strategy, time.perf_counter() - t0)
        except LipbenchError as exc:  # requests will report the same problem clearly
            log.warning("warm-up %s job failed: %s", strategy, exc)
        finally:
            shutil.rmtree(out.parent, ignore_errors=True)

    def close(self) -> None:
        """Stop: running jobs are told to stop, then every replica process is ended."""
        if self.closed:
            return
        self.closed = True
        self.queue.close()
        if self.owns_wb:
            self.wb.close()

    def info(self) -> dict[str, Any]:
        """Models, weights provenance, languages and limits (the page builds itself from it)."""
        cfg = self.cfg
        weights: dict[str, Any] = {}
        for rows in self.replicas.values():
            for r in rows:
                weights.setdefault(r.model, r.weights.to_dict())
        trained = bool(weights) and all(w["trained"] for w in weights.values())
        return {
            "strategies": {
                s: {
                    "models": self.models(s),
                    "replicas": [_replica_brief(r) for r in self.replicas.get(s, [])],
                }
                for s in STRATEGIES
            },
            "weights": weights,
            "weights_trained": trained,
            "languages": _languages(),
            "default_lang": cfg["text"]["lang"],
            "default_text": cfg["text"]["default"],
            "default_engine": cfg["tts"]["engine"],
            "max_chars": cfg["text"]["max_chars"],
            "max_chunks": cfg["plan"]["max_chunks"],
            "min_parallel_s": cfg["plan"]["min_parallel_s"],
            "cancels_running_jobs": self.cancellable,
            "stream": {
                "idle_cancel_s": self.streams.idle_cancel_s,
                "segment_s": cfg["video"]["keyframe_s"],
            },  # fmt: skip
            "queue": self.queue.stats(),
            "storage": self.store.stats(),
        }


def _replica_brief(r: ReplicaRow) -> dict[str, Any]:
    return {
        "replica": r.replica,
        "model": r.model,
        "threads": r.render.threads,
        "device": r.device,
    }


def describe_replica(r: ReplicaRow) -> str:
    w = r.weights
    if w.trained:
        where = f"checkpoint {w.path} (sha256 {str(w.sha256)[:12]}…)"
    else:
        where = f"SEEDED RANDOM weights (seed {w.seed}): untrained, not a real lip-sync"
    return f"model {r.model}, {where}, {r.render.threads} thread(s) on {r.device}, loaded in {r.load_s} s"


def weights_summary(replicas: dict[str, list[ReplicaRow]]) -> str:
    seen = {r.model: r.weights.trained for rows in replicas.values() for r in rows}
    return ", ".join(f"{m}={'checkpoint' if t else 'seeded-random'}" for m, t in seen.items())


def _languages() -> list[str]:
    try:
        return tts.supported_languages("auto")
    except LipbenchError:
        return ["en"]
