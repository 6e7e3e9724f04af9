"""The FastAPI app: middleware, error handlers and routes; the page's files from ``static/``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from . import errors
from .middleware import BodyLimit, HostAllowList, SecurityHeaders
from .runner import run_job
from .schemas import GenerateResponse, error_docs, request_models
from .state import ServerState
from .stream_routes import add_stream_routes

log = logging.getLogger("lipbench.server")


def static_dir() -> Path:
    """The page's HTML/CSS/JS, shipped inside the package (package-data ``static/*``)."""
    return Path(str(resources.files("lipbench").joinpath("static")))


def create_app(cfg: dict[str, Any], workbench: Any | None = None, warmup: bool = True) -> FastAPI:
    """The app. ``workbench`` lets tests inject one (it is then not closed here);
    ``warmup`` runs one short job per strategy at start-up so timings are comparable."""
    owns_wb = workbench is None
    if workbench is None:
        from ..pipeline import Workbench  # torch: only when the app really renders

        workbench = Workbench(cfg)
    state = ServerState.from_config(cfg, workbench, owns_wb, warmup)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.start)
        try:
            yield
        finally:
            state.close()

    swagger = swagger_assets()
    app = FastAPI(
        title="lipbench",
        version="0.2.0",
        summary="Text → speech → Wav2Lip lip-sync video; sequential vs parallel replicas.",
        lifespan=lifespan,
        docs_url=None if swagger else "/docs",
        redoc_url=None,  # ReDoc loads from a CDN; /docs is served locally
        responses=error_docs(400, 500),  # every route: Host refused, internal error
    )
    app.state.lipbench = state
    errors.install(app)
    srv = cfg["server"]
    app.add_middleware(BodyLimit, max_bytes=srv["max_body_bytes"])
    app.add_middleware(HostAllowList, allowed=srv["allowed_hosts"])
    app.add_middleware(SecurityHeaders)  # added last: runs first
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

    add_routes(app, state)
    return app


def swagger_assets() -> Path | None:
    """Swagger UI files from the swagger-ui-bundle-v2 wheel, so /docs works offline."""
    try:
        import swagger_ui_bundle
    except ImportError:
        log.info("swagger-ui-bundle-v2 is not installed: /docs loads Swagger UI from a CDN")
        return None
    path = Path(str(swagger_ui_bundle.swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def add_routes(app: FastAPI, state: ServerState) -> None:
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
        """Models, weights provenance, languages, limits, queue and storage."""
        return state.info()

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
        app.add_api_route(path, endpoint, methods=["POST"], response_model=GenerateResponse,
                          tags=["generate"], responses=error_docs(413, 422, 429))  # fmt: skip

    add_stream_routes(app, state, {"sequential": GenerateRequest, "parallel": ParallelRequest})

    async def video(request: Request) -> FileResponse:
        """A video this server made, by its id (range requests supported)."""
        path = state.store.video(request.path_params["video_id"])
        if path is None:
            raise HTTPException(404, "no video with this id")
        return FileResponse(path, media_type="video/mp4")

    # The id is read from the path by hand (no validation, so no 422 to document); GET and
    # HEAD are two routes so that each has its own operation id.
    param = {"name": "video_id", "in": "path", "required": True, "description": "the id a "
             "generate call returned", "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}  # fmt: skip
    for method in ("GET", "HEAD"):
        app.add_api_route("/videos/{video_id}.mp4", video, methods=[method], tags=["videos"],
                          operation_id=f"video_{method.lower()}", response_class=FileResponse,
                          responses={200: {"content": {"video/mp4": {}}}, **error_docs(404)},
                          openapi_extra={"parameters": [param]})  # fmt: skip
