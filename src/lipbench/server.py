"""Web API and the ``/parallel_test`` page (``lipbench serve``).

One ``Workbench`` per server: its sequential pool (one GAN replica with every thread) and
its parallel pool (the configured replicas) start once, at start-up, and every request
shares them. Jobs run in worker threads behind a bounded queue: at most
``server.max_running`` run, at most ``server.max_waiting`` wait, the rest get 429 with
``Retry-After``. A job whose client disconnects while waiting never starts; one that is
already running finishes (the replicas cannot be interrupted mid-chunk without corrupting
the pool's message stream), then its slot is released and its output deleted.

Videos are served only by the opaque id the server handed out (``GET /videos/{id}.mp4``);
no client-supplied path ever reaches the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import shutil
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import tts
from .errors import FaceError, InputError, LipbenchError

log = logging.getLogger("lipbench.server")

STRATEGIES = ("sequential", "parallel")
VIDEO_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
WARMUP_TEXT = "Hello there."
MAX_MESSAGE = 600  # characters of an error message sent to a client
POLL_S = 0.25  # how often a waiting request checks whether its client is still there
ENGINE_NAMES = Literal["auto", "piper", "espeak", "gtts"]


def static_dir() -> Path:
    """The page's HTML/CSS/JS, shipped inside the package (package-data ``static/*``)."""
    return Path(str(resources.files("lipbench").joinpath("static")))


# ---------------------------------------------------------------------------------------
# Bounded job queue
# ---------------------------------------------------------------------------------------


class QueueFull(Exception):
    """Every running and waiting slot is taken."""

    def __init__(self, running: int, waiting: int, retry_after: int):
        self.running, self.waiting, self.retry_after = running, waiting, retry_after
        super().__init__(f"the job queue is full ({running} running, {waiting} waiting)")


class JobQueue:
    """At most ``max_running`` jobs run (each in a worker thread), at most ``max_waiting``
    wait for a slot; ``run`` raises QueueFull beyond that.

    A running job's slot is released when its *thread* returns, not when the request that
    started it goes away: a cancelled request cannot leave two jobs on one set of replicas.
    A request cancelled while waiting gives its place up and its job never starts.
    """

    def __init__(self, max_running: int, max_waiting: int):
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be ≥ 1 and max_waiting ≥ 0")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self.cancelled = 0  # waiting jobs dropped because their client left
        self.abandoned = 0  # running jobs whose client left (they finish, output discarded)
        self.completed = 0
        self._sem: asyncio.Semaphore | None = None
        self._executor = ThreadPoolExecutor(max_running, thread_name_prefix="lipbench-job")
        self._durations: deque[float] = deque(maxlen=20)

    def _semaphore(self) -> asyncio.Semaphore:
        # Created on first use so it belongs to the server's event loop.
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_running)
        return self._sem

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: recent mean job time × jobs ahead / slots."""
        mean = statistics.fmean(self._durations) if self._durations else 10.0
        ahead = self.waiting + 1
        return max(1, math.ceil(mean * ahead / self.max_running))

    def stats(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "waiting": self.waiting,
            "max_running": self.max_running,
            "max_waiting": self.max_waiting,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "abandoned": self.abandoned,
        }

    async def run(
        self, fn: Callable[[], Any], on_abandon: Callable[[asyncio.Future], None] | None = None
    ) -> Any:
        """Run ``fn`` in a worker thread once a slot is free; return its result.

        ``on_abandon(future)`` is called (on the event loop) after the thread finishes, when
        the awaiting task was cancelled while ``fn`` was running.
        """
        if self.running + self.waiting >= self.max_running + self.max_waiting:
            raise QueueFull(self.running, self.waiting, self.retry_after())
        sem = self._semaphore()
        self.waiting += 1
        try:
            await sem.acquire()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.waiting -= 1
        self.running += 1
        t0 = time.monotonic()
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn)

        def release(f: asyncio.Future) -> None:
            self.running -= 1
            self.completed += 1
            if not f.cancelled() and f.exception() is None:
                self._durations.append(time.monotonic() - t0)
            sem.release()

        fut.add_done_callback(release)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            self.abandoned += 1
            fut.add_done_callback(_abandoned(on_abandon))
            raise

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _abandoned(
    on_abandon: Callable[[asyncio.Future], None] | None,
) -> Callable[[asyncio.Future], None]:
    def done(f: asyncio.Future) -> None:
        if not f.cancelled() and f.exception() is not None:  # retrieve it: no "never retrieved"
            log.info("an abandoned job failed: %s", f.exception())
        if on_abandon:
            on_abandon(f)

    return done


# ---------------------------------------------------------------------------------------
# Request / response models
# ---------------------------------------------------------------------------------------


class GenerateResponse(BaseModel):
    id: str = Field(description="opaque id of the video (32 hex digits)")
    video_url: str = Field(description="/videos/{id}.mp4, supports range requests")
    strategy: str
    models: list[str]
    timings: dict[str, float] = Field(
        description="seconds per stage from the run record: tts, convert, detect, split, "
        "infer, merge, total (model loading is not included: replicas are warm)"
    )
    plan: dict[str, Any]
    weights: dict[str, Any]
    weights_trained: bool
    weights_note: str | None = None
    audio_duration_s: float | None = None
    frames: int | None = None
    fps: float | None = None
    render_fps: float | None = None
    chunks: list[dict[str, Any]] = Field(default_factory=list)
    tts: dict[str, Any] | None = None
    queue_wait_s: float = Field(description="time spent waiting for a free slot (not in total)")


def request_models(cfg: dict[str, Any]) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request bodies with the configured limits baked in (FastAPI validates them)."""
    max_chars = cfg["text"]["max_chars"]
    default_lang = cfg["text"]["lang"]
    default_engine = cfg["tts"]["engine"]
    max_chunks = cfg["plan"]["max_chunks"]

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"text": "Привет, мир!", "lang": "ru"}]},
        )
        text: str = Field(description=f"what the avatar says (1–{max_chars} characters)")
        engine: ENGINE_NAMES | None = Field(
            None, description=f"TTS engine (default: the config's, now '{default_engine}')"
        )
        lang: str = Field(default_lang, description="language tag, e.g. en, ru, de")

        @field_validator("text")
        @classmethod
        def _text(cls, v: str) -> str:
            try:
                return tts.validate_text(v, max_chars)
            except InputError as exc:
                raise ValueError(str(exc)) from None

        @field_validator("lang")
        @classmethod
        def _lang(cls, v: str, info: ValidationInfo) -> str:
            if "engine" not in info.data:  # the engine itself was invalid: reported already
                return v
            engine = info.data["engine"] or default_engine
            try:
                tts.resolve_engine(engine, v)
            except LipbenchError as exc:
                raise ValueError(str(exc)) from None
            return v

    class ParallelRequest(GenerateRequest):
        chunks: int | None = Field(
            None,
            ge=1,
            le=max_chunks,
            description="force a chunk count (default: the planner decides; short audio "
            "gives 1 chunk, i.e. no parallelism)",
        )

    return GenerateRequest, ParallelRequest


# ---------------------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------------------


@dataclass
class ServerState:
    cfg: dict[str, Any]
    wb: Any  # pipeline.Workbench (or a test double with the same methods)
    owns_wb: bool
    warmup: bool
    jobs_dir: Path
    queue: JobQueue
    videos: dict[str, Path] = field(default_factory=dict)  # id → result.mp4 (server-made only)
    replicas: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pool_locks: dict[str, threading.Lock] = field(
        default_factory=lambda: {s: threading.Lock() for s in STRATEGIES}
    )
    started: bool = False
    closed: bool = False

    def start(self) -> None:
        """Start both pools (replicas load their weights once), log which weights each model
        uses, and run one short warm-up job per strategy so that no request pays first-call
        costs (TTS voice load, mel front end, face detection) another one does not."""
        if self.started:
            return
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        for strategy in STRATEGIES:
            models = self.wb.models_for(strategy, None)
            pool = self.wb.pool(models)
            self.replicas[strategy] = pool.replica_info()
            for r in self.replicas[strategy]:
                log.info("%s replica %d: %s", strategy, r["replica"], describe_replica(r))
        if self.warmup:
            self._warm_up()
        self.started = True
        log.info("ready: %s", weights_summary(self.replicas))

    def _warm_up(self) -> None:
        for strategy in STRATEGIES:
            out = self.jobs_dir / f".warmup-{strategy}"
            t0 = time.perf_counter()
            chunks = len(self.wb.models_for(strategy, None)) if strategy == "parallel" else None
            try:
                self.wb.generate(
                    out,
                    text=WARMUP_TEXT,
                    lang="en",
                    strategy=strategy,
                    chunks=chunks,
                    progress=False,
                )
                log.info("warm-up %s job: %.1f s", strategy, time.perf_counter() - t0)
            except LipbenchError as exc:  # requests will report the same problem clearly
                log.warning("warm-up %s job failed: %s", strategy, exc)
            finally:
                shutil.rmtree(out, ignore_errors=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue.close()
        if self.owns_wb:
            self.wb.close()


def describe_replica(r: dict[str, Any]) -> str:
    w = r.get("weights") or {}
    if w.get("trained"):
        where = f"checkpoint {w.get('path')} (sha256 {str(w.get('sha256'))[:12]}…)"
    else:
        where = f"SEEDED RANDOM weights (seed {w.get('seed')}): untrained, not a real lip-sync"
    return f"model {r['model']}, {where}, {r.get('threads')} thread(s) on {r.get('device')}, loaded in {r.get('load_s')} s"


def weights_summary(replicas: dict[str, list[dict[str, Any]]]) -> str:
    seen: dict[str, bool] = {}
    for rows in replicas.values():
        for r in rows:
            seen[r["model"]] = bool((r.get("weights") or {}).get("trained"))
    return ", ".join(f"{m}={'checkpoint' if t else 'seeded-random'}" for m, t in seen.items())


# ---------------------------------------------------------------------------------------
# ASGI middleware: request body limit
# ---------------------------------------------------------------------------------------


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413, judged by Content-Length and by
    the bytes that actually arrive (a chunked body has no Content-Length). The body is
    buffered (it is small by construction) and replayed to the app."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                return
            if too_big:
                await self._refuse(send)
                return
        parts: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            parts.append(body)
            if not msg.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()  # later calls: wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable) -> None:
        await _send_json(
            send,
            413,
            {
                "detail": f"request body over the limit of {self.max_bytes} bytes",
                "fix": "send less text (or raise server.max_body_bytes in the config)",
            },
        )


async def _send_json(send: Callable, status: int, payload: dict[str, Any]) -> None:
    resp = JSONResponse(payload, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})


# ---------------------------------------------------------------------------------------
# Error handlers: JSON with a message, never a stack trace
# ---------------------------------------------------------------------------------------


def _error(status: int, detail: str, fix: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"detail": _clip(detail)}
    if fix:
        body["fix"] = _clip(fix)
    body.update(extra)
    return JSONResponse(body, status_code=status)


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """Keep messages readable: an engine error can embed kilobytes of binary repr."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _validation_message(err: dict[str, Any]) -> tuple[str, str]:
    if err.get("type") == "json_invalid":  # its loc is a character offset, not a field
        return "body", "the body is not valid JSON"
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return where, msg


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_validation_message(e) for e in exc.errors()]
    detail = "; ".join(f"{w}: {m}" for w, m in errors)
    return _error(
        422,
        detail,
        'send JSON like {"text": "Hello!", "lang": "en"}; see /docs',
        errors=[{"field": w, "message": m} for w, m in errors],
    )


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    resp = _error(exc.status_code, str(exc.detail))
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


async def on_lipbench_error(request: Request, exc: LipbenchError) -> JSONResponse:
    return _lipbench_response(exc)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    return _error(500, f"internal server error ({type(exc).__name__}); the server log has details")


def _lipbench_response(exc: LipbenchError) -> JSONResponse:
    status = 422 if isinstance(exc, InputError | FaceError) else 500
    return _error(status, exc.problem, exc.fix)


# ---------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------


def create_app(cfg: dict[str, Any], workbench: Any | None = None, warmup: bool = True) -> FastAPI:
    """The FastAPI app. ``workbench`` lets tests inject one (it is then not closed here);
    ``warmup`` runs one short job per strategy at start-up so timings are comparable."""
    owns_wb = workbench is None
    if workbench is None:
        from .pipeline import Workbench

        workbench = Workbench(cfg)
    srv = cfg["server"]
    state = ServerState(
        cfg=cfg,
        wb=workbench,
        owns_wb=owns_wb,
        warmup=warmup,
        jobs_dir=Path(cfg["results_dir"]) / "server",
        queue=JobQueue(srv["max_running"], srv["max_waiting"]),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.start)
        try:
            yield
        finally:
            state.close()

    swagger = _swagger_assets()
    app = FastAPI(
        title="lipbench",
        version="0.1.0",
        summary="Text → speech → Wav2Lip lip-sync video; sequential vs parallel replicas.",
        lifespan=lifespan,
        docs_url=None if swagger else "/docs",
        redoc_url=None,  # ReDoc loads from a CDN; /docs is served locally
    )
    app.state.lipbench = state
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(LipbenchError, on_lipbench_error)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_middleware(BodyLimit, max_bytes=srv["max_body_bytes"])
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    if swagger:
        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title="lipbench API",
                swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                swagger_css_url="/docs-assets/swagger-ui.css",
                swagger_favicon_url="/docs-assets/favicon-32x32.png",
            )

    _add_routes(app, state)
    return app


def _swagger_assets() -> Path | None:
    """Swagger UI files from the swagger-ui-bundle-v2 wheel, so /docs works offline."""
    try:
        import swagger_ui_bundle
    except ImportError:
        log.info("swagger-ui-bundle-v2 is not installed: /docs loads Swagger UI from a CDN")
        return None
    path = Path(str(swagger_ui_bundle.swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _add_routes(app: FastAPI, state: ServerState) -> None:
    GenerateRequest, ParallelRequest = request_models(state.cfg)

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/parallel_test")

    @app.get("/parallel_test", include_in_schema=False)
    async def parallel_test() -> FileResponse:
        return FileResponse(static_dir() / "parallel_test.html", media_type="text/html")

    @app.get("/api/health", tags=["server"])
    async def health() -> dict[str, Any]:
        return {"status": "ok" if state.started else "starting", "queue": state.queue.stats()}

    @app.get("/api/info", tags=["server"])
    async def info() -> dict[str, Any]:
        """Models, weights provenance, languages and limits (the page builds itself from it)."""
        return server_info(state)

    async def generate(body: Any, request: Request) -> Any:
        """Sequential: the whole clip on one GAN replica (all threads)."""
        return await run_job(state, request, "sequential", body)

    async def generate_parallel(body: Any, request: Request) -> Any:
        """Parallel: chunks rendered at once on the configured replicas, then merged."""
        return await run_job(state, request, "parallel", body)

    for path, endpoint, model in (
        ("/api/generate", generate, GenerateRequest),
        ("/api/generate_parallel", generate_parallel, ParallelRequest),
    ):
        # The body models are built per app (limits from the config); with postponed
        # annotations FastAPI could not resolve a local class by name, so set it directly.
        endpoint.__annotations__["body"] = model
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=GenerateResponse,
            tags=["generate"],
            responses=_error_docs(),
        )

    @app.get(
        "/videos/{video_id}.mp4",
        tags=["videos"],
        response_class=FileResponse,
        responses={200: {"content": {"video/mp4": {}}}, 404: {"description": "unknown id"}},
    )
    async def video(video_id: str) -> FileResponse:
        """A video this server made, by its id (range requests supported)."""
        path = state.videos.get(video_id) if VIDEO_ID.fullmatch(video_id) else None
        if path is None or not path.is_file():
            raise HTTPException(404, "no video with this id")
        return FileResponse(path, media_type="video/mp4")


def _error_docs() -> dict[int | str, dict[str, Any]]:
    return {
        413: {"description": "request body too large"},
        422: {"description": "invalid text, language or engine (JSON with a message)"},
        429: {"description": "job queue full; see the Retry-After header"},
    }


def server_info(state: ServerState) -> dict[str, Any]:
    cfg = state.cfg
    weights: dict[str, Any] = {}
    for rows in state.replicas.values():
        for r in rows:
            weights.setdefault(r["model"], r.get("weights"))
    trained = bool(weights) and all((w or {}).get("trained") for w in weights.values())
    return {
        "strategies": {
            s: {
                "models": state.wb.models_for(s, None),
                "replicas": [
                    {k: r.get(k) for k in ("replica", "model", "threads", "device")}
                    for r in state.replicas.get(s, [])
                ],
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
        "queue": state.queue.stats(),
    }


def _languages() -> list[str]:
    try:
        return tts.supported_languages("auto")
    except LipbenchError:
        return ["en"]


async def run_job(state: ServerState, request: Request, strategy: str, body: Any) -> Any:
    """Queue one generation, wait for it while watching for a client disconnect."""
    job_id = secrets.token_hex(16)
    out_dir = state.jobs_dir / job_id
    chunks = getattr(body, "chunks", None)

    def work() -> dict[str, Any]:
        # One job per pool at a time: a pool's result queue is not shared between jobs.
        with state.pool_locks[strategy]:
            return state.wb.generate(
                out_dir,
                text=body.text,
                lang=body.lang,
                engine=body.engine,
                strategy=strategy,
                chunks=chunks,
                progress=False,
            )

    def discard(_f: asyncio.Future) -> None:
        log.info("job %s: client left while it ran; output discarded", job_id)
        shutil.rmtree(out_dir, ignore_errors=True)

    t0 = time.monotonic()
    queued = asyncio.ensure_future(state.queue.run(work, on_abandon=discard))
    try:
        while not queued.done():
            await asyncio.wait({queued}, timeout=POLL_S)
            if not queued.done() and await request.is_disconnected():
                log.info("job %s (%s): client disconnected; cancelling", job_id, strategy)
                queued.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await queued
                return JSONResponse({"detail": "client disconnected"}, status_code=499)
        record = queued.result()
    except QueueFull as exc:
        return _queue_full(exc)
    except LipbenchError as exc:
        shutil.rmtree(out_dir, ignore_errors=True)
        log.warning("job %s (%s) failed: %s", job_id, strategy, exc)
        return _lipbench_response(exc)
    except Exception as exc:  # noqa: BLE001 - logged here, reported without a traceback
        shutil.rmtree(out_dir, ignore_errors=True)
        return await on_unexpected(request, exc)
    finally:
        if not queued.done():
            queued.cancel()
    result = out_dir / "result.mp4"
    state.videos[job_id] = result
    total = (record.get("timings") or {}).get("total")
    log.info("job %s (%s): %s s, %s", job_id, strategy, total, result)
    return response_from_record(job_id, record, time.monotonic() - t0)


def _queue_full(exc: QueueFull) -> JSONResponse:
    resp = _error(
        429,
        str(exc),
        f"retry in about {exc.retry_after} s",
        retry_after_s=exc.retry_after,
    )
    resp.headers["Retry-After"] = str(exc.retry_after)
    return resp


def response_from_record(job_id: str, rec: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
    timings = {k: float(v) for k, v in (rec.get("timings") or {}).items() if v is not None}
    chunk_keys = ("chunk", "replica", "model", "frame_start", "frame_end", "frames",
                  "start_offset_s", "end_offset_s", "wall_s", "fps")  # fmt: skip
    return {
        "id": job_id,
        "video_url": f"/videos/{job_id}.mp4",
        "strategy": rec.get("strategy"),
        "models": rec.get("models") or [],
        "timings": timings,
        "plan": rec.get("plan") or {},
        "weights": rec.get("weights") or {},
        "weights_trained": bool(rec.get("weights_trained")),
        "weights_note": rec.get("weights_note"),
        "audio_duration_s": rec.get("audio_duration_s"),
        "frames": rec.get("frames"),
        "fps": rec.get("fps"),
        "render_fps": rec.get("render_fps"),
        "chunks": [{k: c.get(k) for k in chunk_keys} for c in rec.get("chunks") or []],
        "tts": rec.get("tts"),
        "queue_wait_s": round(max(0.0, elapsed_s - timings.get("total", 0.0)), 3),
    }


# ---------------------------------------------------------------------------------------
# lipbench serve
# ---------------------------------------------------------------------------------------


def check_port(host: str, port: int) -> None:
    """Fail before the slow start-up when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise LipbenchError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                "stop whatever uses that port or pass --port N",
            ) from None


def main(args: Any, cfg: dict[str, Any]) -> int:
    """``lipbench serve [--host H] [--port P]``: start pools, then serve until Ctrl-C."""
    import uvicorn

    host = getattr(args, "host", None) or cfg["server"]["host"]
    port = getattr(args, "port", None) or cfg["server"]["port"]
    if host not in LOOPBACK:
        log.warning(
            "listening on %s: anyone who can reach this address can run jobs (no authentication)",
            host,
        )
    check_port(host, port)
    app = create_app(cfg)
    state: ServerState = app.state.lipbench
    try:
        state.start()  # here rather than in the lifespan: a bad checkpoint is a clean CLI error
    except BaseException:
        state.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    log.info("open http://%s:%d/parallel_test (API docs: /docs)", shown, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        state.close()
    return 0
