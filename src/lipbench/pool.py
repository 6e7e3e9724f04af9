"""Replica pool: long-lived worker processes, each holding one loaded Wav2Lip checkpoint,
rendering frame ranges of jobs into video-only chunk files.

On CPU a replica is a process with its own torch thread count (replicas × threads ≤ cores
by default); on CUDA each replica process owns its own copy of the model on the GPU. The
pool starts once and is reused across jobs; a replica that dies mid-chunk is replaced and
its chunk retried once.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LipbenchError

log = logging.getLogger("lipbench.pool")

START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ReplicaSpec:
    model: str  # checkpoint name: gan, nogan, ...
    threads: int
    device: str
    weights_dir: str
    weights_files: dict[str, str]
    seed: int
    render_options: Any  # render.RenderOptions (kept Any so this module imports no torch)


@dataclass
class ChunkTask:
    task_id: int
    job: Any  # render.JobInputs
    start: int
    end: int
    out_path: str
    encoder: Any  # video.EncoderSettings
    chunk_index: int = 0


def peak_rss_mb() -> float:
    """This process's own peak RSS. /proc's VmHWM belongs to the current address space;
    getrusage's ru_maxrss survives exec, so a spawned replica would inherit its parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def render_chunk(
    renderer: Any,
    job: Any,
    start: int,
    end: int,
    out_path: str | Path,
    encoder: Any,
    tick: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Render frames [start, end) of ``job`` into a video-only file (atomically). Returns
    timing stats and the chunk's edge frames + consecutive-frame steps for the seam metric.
    Used by pool replicas and by ``lipbench render-chunk`` alike."""
    import numpy as np

    from .metrics import mean_abs_diff
    from .video import FrameWriter

    started = time.time()
    first = prev = None
    steps: list[float] = []
    render_s = 0.0
    w, h = job.avatar.size
    t = time.perf_counter()
    with FrameWriter(out_path, w, h, encoder) as writer:
        for frame in renderer.render(job, start, end):
            render_s += time.perf_counter() - t
            writer.write(frame)
            if first is None:
                first = frame.copy()
            if prev is not None:
                steps.append(mean_abs_diff(prev, frame))
            prev = frame
            if tick and writer.frames_written % 8 == 0:
                tick(8)
            t = time.perf_counter()
    ended = time.time()
    n = end - start
    stats = {
        "frame_start": start,
        "frame_end": end,
        "frames": n,
        "start_ts": started,
        "end_ts": ended,
        "wall_s": round(ended - started, 4),
        "render_s": round(render_s, 4),
        "encode_s": round(ended - started - render_s, 4),
        "fps": round(n / max(ended - started, 1e-9), 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    return stats, {"first": np.asarray(first), "last": np.asarray(prev), "steps": steps}


def _replica_main(replica_id: int, spec: ReplicaSpec, tasks: mp.Queue, results: Any) -> None:
    """Worker process: load the checkpoint once, then render tasks until told to stop."""
    import torch

    from .render import Renderer
    from .weights import load_generator

    torch.set_num_threads(spec.threads)
    try:
        t0 = time.perf_counter()
        model, info = load_generator(
            spec.model, spec.weights_dir, spec.weights_files, seed=spec.seed, device=spec.device
        )
        renderer = Renderer(model, spec.device, dataclasses.replace(spec.render_options))
        del model  # the renderer holds its own (BN-folded) copy; don't keep two in memory
        load_s = time.perf_counter() - t0

    except LipbenchError as exc:
        results.send(("failed", replica_id, str(exc)))
        return
    except Exception:  # noqa: BLE001 - report any start-up failure to the parent
        results.send(("failed", replica_id, traceback.format_exc(limit=3)))
        return
    weights = {k: getattr(info, k) for k in ("name", "path", "source", "sha256", "seed", "trained")}
    results.send(
        (
            "ready",
            replica_id,
            {
                "pid": os.getpid(),
                "load_s": round(load_s, 3),
                "weights": weights,
                "batch_size": renderer.options.batch_size,
                "calibration": renderer.calibration,
            },
        )
    )

    while True:
        msg = tasks.get()
        if msg is None:
            return
        task: ChunkTask = msg
        try:
            results.send(("started", replica_id, task.task_id, time.time()))

            def tick(n: int, tid: int = task.task_id) -> None:
                results.send(("progress", replica_id, tid, n))

            stats, edges = render_chunk(
                renderer, task.job, task.start, task.end, task.out_path, task.encoder, tick
            )
            stats.update(
                replica=replica_id, pid=os.getpid(), model=spec.model, threads=spec.threads
            )
            if spec.device.startswith("cuda"):
                stats["gpu_max_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            results.send(("done", replica_id, task.task_id, stats, edges))
        except LipbenchError as exc:
            results.send(("error", replica_id, task.task_id, str(exc)))
        except Exception:  # noqa: BLE001 - the parent turns this into a clear chunk error
            results.send(("error", replica_id, task.task_id, traceback.format_exc(limit=4)))


@dataclass
class _Replica:
    replica_id: int
    spec: ReplicaSpec
    process: Any
    tasks: Any
    conn: Any  # this replica's own result pipe (read end)
    info: dict[str, Any] = field(default_factory=dict)
    eof: bool = False


class ChunkFailed(LipbenchError):
    pass


class ReplicaPool:
    """A fixed set of replicas. ``render_chunks`` runs tasks across them and returns stats."""

    def __init__(self, specs: list[ReplicaSpec]):
        if not specs:
            raise ValueError("a pool needs at least one replica")
        self.specs = specs
        self._ctx = mp.get_context("spawn")  # fork + torch threads is unsafe
        self._backlog: list[tuple] = []  # messages read while waiting for a replica to start
        self.replicas: list[_Replica] = []
        self.restarts = 0
        self._ids = itertools.count()
        self.on_event: Callable[[str, dict], None] | None = None  # test/progress hook
        t0 = time.perf_counter()
        try:
            for i, spec in enumerate(specs):
                self.replicas.append(self._spawn(i, spec))
            for r in self.replicas:
                self._wait_ready(r)
        except BaseException:
            self.close()
            raise
        self.start_s = round(time.perf_counter() - t0, 3)

    @property
    def models(self) -> list[str]:
        return [s.model for s in self.specs]

    def _spawn(self, replica_id: int, spec: ReplicaSpec) -> _Replica:
        tasks = self._ctx.Queue()
        # A replica that dies leaves its queue unread; without this the queue's feeder
        # thread would block the parent's exit forever, trying to flush the dead pipe.
        tasks.cancel_join_thread()
        # One result pipe per replica, never a shared queue: a replica killed while writing
        # would otherwise die holding the shared queue's lock and block every other writer.
        reader, writer = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_replica_main,
            args=(replica_id, spec, tasks, writer),
            daemon=True,
            name=f"replica-{replica_id}-{spec.model}",
        )
        proc.start()
        writer.close()  # only the child writes; its death then shows as EOF here
        return _Replica(replica_id, spec, proc, tasks, reader)

    def _poll(self, timeout: float, backlog: bool = True) -> list[tuple]:
        """Messages from any replica (the backlog first, unless ``backlog`` is False),
        waiting up to ``timeout``."""
        if backlog and self._backlog:
            out, self._backlog = self._backlog, []
            return out
        live = {r.conn: r for r in self.replicas if not r.eof}
        if not live:
            time.sleep(timeout)
            return []
        out = []
        for conn in mp_connection.wait(list(live), timeout):
            try:
                out.append(conn.recv())
            except Exception:  # noqa: BLE001 - EOF or a message cut off by a kill: the replica is gone
                live[conn].eof = True
        return out

    def _wait_ready(self, r: _Replica) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.replicas[r.replica_id].info:  # its "ready" was read while waiting for another
                return
            msgs = self._poll(0.5, backlog=False)  # the backlog is for the render loop
            if not msgs and not r.process.is_alive():
                raise LipbenchError(
                    f"replica {r.replica_id} ({r.spec.model}) exited while loading (code {r.process.exitcode})"
                )
            for msg in msgs:
                kind, rid = msg[0], msg[1]
                if kind == "failed":
                    text = msg[2].strip()
                    if "\n" in text:  # a traceback: keep its last line
                        text = f"replica {rid} ({self.specs[rid].model}) failed to start: {text.splitlines()[-1]}"
                    raise LipbenchError(text)
                if kind == "ready":
                    self.replicas[rid].info = msg[2]
                else:  # another replica's work in progress: keep it for the render loop
                    self._backlog.append(msg)
        raise LipbenchError(f"replica {r.replica_id} did not start within {START_TIMEOUT_S:.0f} s")

    def replica_info(self) -> list[dict[str, Any]]:
        return [
            {
                "replica": r.replica_id,
                "model": r.spec.model,
                "threads": r.spec.threads,
                "device": r.spec.device,
                **r.info,
            }
            for r in self.replicas
        ]

    def pids(self) -> list[int]:
        return [r.process.pid for r in self.replicas if r.process.pid]

    def _emit(self, kind: str, data: dict) -> None:
        if self.on_event:
            self.on_event(kind, data)

    def _restart(self, r: _Replica) -> None:
        """Replace a dead replica with a fresh process of the same spec."""
        self.restarts += 1
        fresh = self._spawn(r.replica_id, r.spec)
        self.replicas[r.replica_id] = fresh
        self._wait_ready(fresh)

    def render_chunks(
        self,
        tasks: list[ChunkTask],
        assign: list[int],
        progress: Callable[[int], None] | None = None,
    ) -> tuple[dict[int, dict], dict[int, dict]]:
        """Run ``tasks[i]`` on replica ``assign[i]`` (each replica works through its own queue,
        longest chunk first). Returns (stats, edges) keyed by task_id. A replica that dies
        mid-chunk is restarted and the chunk retried once; a second failure raises
        ChunkFailed naming the chunk."""
        # Pool-unique ids, so a late message from an aborted earlier batch is never taken
        # for one of this batch's chunks.
        original = {}
        renamed = []
        for t in tasks:
            uid = next(self._ids)
            original[uid] = t.task_id
            renamed.append(dataclasses.replace(t, task_id=uid))
        tasks = renamed
        by_id = {t.task_id: t for t in tasks}
        queues: dict[int, list[ChunkTask]] = {r.replica_id: [] for r in self.replicas}
        for t, rid in zip(tasks, assign, strict=True):
            queues[rid].append(t)
        for q in queues.values():
            q.sort(key=lambda t: t.end - t.start, reverse=True)
        running: dict[int, ChunkTask] = {}  # replica → task
        attempts: dict[int, int] = {t.task_id: 0 for t in tasks}
        stats: dict[int, dict] = {}
        edges: dict[int, dict] = {}

        def feed(rid: int) -> None:
            if rid not in running and queues[rid]:
                t = queues[rid].pop(0)
                attempts[t.task_id] += 1
                running[rid] = t
                self.replicas[rid].tasks.put(t)

        for rid in queues:
            feed(rid)
        try:
            self._run_loop(running, queues, attempts, stats, edges, by_id, feed, progress)
        except BaseException:
            self._abort(running)
            raise
        return (
            {original[k]: v for k, v in stats.items()},
            {original[k]: v for k, v in edges.items()},
        )

    def _abort(self, running: dict[int, ChunkTask]) -> None:
        """Stop this batch's chunks still in flight: their replicas are replaced, their
        partial files removed, so nothing keeps holding the pool."""
        for rid, t in list(running.items()):
            r = self.replicas[rid]
            if r.process.is_alive():
                r.process.kill()
            r.process.join()
            _remove_partials(t.out_path)
            self._restart(r)
        running.clear()

    def _run_loop(self, running, queues, attempts, stats, edges, by_id, feed, progress) -> None:
        while running:
            msgs = self._poll(0.5)
            for msg in msgs:
                self._handle(msg, running, attempts, stats, edges, by_id, feed, progress)
            for rid, t in list(running.items()):
                r = self.replicas[rid]
                # Dead only once everything it sent has been read (a "done" may still wait).
                if not (r.eof or (not r.process.is_alive() and not r.conn.poll())):
                    continue
                if r.process.is_alive():  # its pipe broke mid-message: treat it as lost
                    r.process.kill()
                r.process.join()
                code = r.process.exitcode
                _remove_partials(t.out_path)
                del running[rid]
                if attempts[t.task_id] >= 2:
                    self._restart(r)  # leave the pool whole for the next job
                    raise ChunkFailed(
                        f"chunk {t.chunk_index} (frames {t.start}–{t.end}) failed twice: replica {rid} ({r.spec.model}) died (exit code {code})",
                        "check memory (dmesg) and run again; the partial files were removed",
                    ) from None
                log.warning(
                    "replica %d died (exit %s) rendering chunk %d; retrying on a fresh replica",
                    rid,
                    code,
                    t.chunk_index,
                )
                self._emit(
                    "replica_died", {"replica": rid, "chunk": t.chunk_index, "exitcode": code}
                )
                self._restart(r)
                queues[rid].insert(0, t)
                feed(rid)

    def _handle(self, msg, running, attempts, stats, edges, by_id, feed, progress) -> None:
        """One message from a replica during a batch."""
        kind = msg[0]
        if kind in ("started", "progress", "done", "error") and msg[2] not in by_id:
            return  # from an aborted earlier batch
        if kind == "started":
            self._emit(
                "started",
                {
                    "replica": msg[1],
                    "chunk": by_id[msg[2]].chunk_index,
                    "pid": self.replicas[msg[1]].process.pid,
                },
            )
        elif kind == "progress":
            if progress:
                progress(msg[3])
        elif kind == "done":
            _, rid, tid, st, edge = msg
            st["chunk"] = by_id[tid].chunk_index
            st["attempts"] = attempts[tid]
            stats[tid], edges[tid] = st, edge
            running.pop(rid, None)
            feed(rid)
        elif kind == "error":
            _, rid, tid, text = msg
            t = by_id[tid]
            _remove_partials(t.out_path)
            line = text.strip().splitlines()[-1] if text.strip() else "unknown error"
            raise ChunkFailed(
                f"chunk {t.chunk_index} (frames {t.start}–{t.end}) failed on replica {rid} ({self.replicas[rid].spec.model}): {line}"
            )
        elif kind == "ready":
            self.replicas[msg[1]].info = msg[2]

    def close(self) -> None:
        for r in self.replicas:
            try:
                r.tasks.put(None)
            except (ValueError, OSError):
                pass
        for r in self.replicas:
            r.process.join(timeout=10)
            if r.process.is_alive():
                r.process.kill()
                r.process.join()
            r.conn.close()
        self.replicas = []

    def __enter__(self) -> ReplicaPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _remove_partials(out_path: str) -> None:
    """A killed writer leaves its temp file (.<stem>.*.part.mp4) behind: remove it."""
    p = Path(out_path)
    for leftover in p.parent.glob(f".{p.stem}.*.part*"):
        leftover.unlink(missing_ok=True)
