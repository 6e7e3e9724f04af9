"""Every failure becomes JSON of one shape (``schemas.ErrorBody``: detail, fix, errors),
never a stack trace; these builders and handlers are the only places that make it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import FaceError, InputError, LipbenchError
from .queue import QueueFull

log = logging.getLogger("lipbench.server")

MAX_MESSAGE = 600  # characters of a message sent to a client
REQUEST_FIX = 'send JSON like {"text": "Hello!", "lang": "en"}; see /docs'
DEFAULT_FIX = {
    400: "see /docs for what the API accepts",
    404: "use the video_url a generate call returned (old jobs are removed by the storage "
    "policy); see /docs for the routes",
    405: "see /docs for the methods each route accepts",
    408: "send the whole request at once",
    413: "send less",
    422: REQUEST_FIX,
    429: "retry later",
    500: "the server log has the details; retry, and report it if it repeats",
}


class HTTPProblem(StarletteHTTPException):
    """An HTTP error that carries its own fix (the handler below sends both)."""

    def __init__(self, status: int, detail: str, fix: str,
                 headers: dict[str, str] | None = None):  # fmt: skip
        super().__init__(status, detail, headers)
        self.fix = fix


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """Keep messages readable: an engine error can embed kilobytes of binary repr."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_body(
    status: int,
    detail: str,
    fix: str | None = None,
    errors: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "detail": clip(detail),
        "fix": clip(fix or DEFAULT_FIX.get(status, DEFAULT_FIX[400])),
        "errors": errors or [],
        **extra,
    }


def error_response(
    status: int,
    detail: str,
    fix: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = error_body(status, detail, fix, errors, **extra)
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(send: Callable, status: int, detail: str, fix: str | None = None) -> None:
    """The same body from raw ASGI middleware (before FastAPI's handlers exist)."""
    resp = error_response(status, detail, fix)
    await send({"type": "http.response.start", "status": status, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})


def lipbench_status(exc: LipbenchError) -> int:
    """Input the caller can change (text the engine cannot speak, an engine that cannot run
    here, an image without a face) → 422; anything else the server must fix → 500."""
    return 422 if isinstance(exc, InputError | FaceError) else 500


def lipbench_response(exc: LipbenchError) -> JSONResponse:
    return error_response(lipbench_status(exc), exc.problem, exc.fix)


def queue_full_response(exc: QueueFull) -> JSONResponse:
    return error_response(
        429,
        str(exc),
        f"retry in about {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
        retry_after_s=exc.retry_after,
    )


def _validation_message(err: dict[str, Any]) -> tuple[str, str]:
    if err.get("type") == "json_invalid":  # its loc is a character offset, not a field
        return "body", "the body is not valid JSON"
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return ".".join(loc) or "body", msg


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_validation_message(e) for e in exc.errors()]
    # lipbench's own checks (text, language) carry their fix; pydantic's get the generic one
    fixes = [e["ctx"]["fix"] for e in exc.errors() if (e.get("ctx") or {}).get("fix")]
    return error_response(
        422,
        "; ".join(f"{w}: {m}" for w, m in errors),
        "; ".join(dict.fromkeys(fixes)) or REQUEST_FIX,
        errors=[{"field": w, "message": m} for w, m in errors],
    )


async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    fix = getattr(exc, "fix", None)
    return error_response(exc.status_code, str(exc.detail), fix, headers=exc.headers)


async def on_lipbench_error(request: Request, exc: LipbenchError) -> JSONResponse:
    return lipbench_response(exc)


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    return error_response(500, f"internal server error ({type(exc).__name__})")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(LipbenchError, on_lipbench_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unexpected)
