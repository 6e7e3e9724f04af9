"""Request and response bodies (pydantic), the one error body every failure uses, and
the OpenAPI ``responses`` entries that document it."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .. import tts
from ..errors import InputError, LipbenchError
from .view import GenerateResponse

JOB_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16): ids of jobs, videos and audio
ENGINE_NAMES = Literal[tts.ENGINES]  # type: ignore[valid-type]  # one list: lipbench.tts
# Documents the rule tts.validate_text enforces (with a message naming the position).
NO_CONTROLS = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]*$"


def invalid(exc: LipbenchError) -> PydanticCustomError:
    """A validation error that keeps the problem and its fix apart (the error body's
    ``detail``/``errors`` get the problem, its ``fix`` the fix)."""
    return PydanticCustomError("lipbench", "{problem}", {"problem": exc.problem, "fix": exc.fix})


class FieldError(BaseModel):
    field: str = Field(description="where: a body field such as text, or 'body'")
    message: str


class ErrorBody(BaseModel):
    """Every error the server sends, whatever its status (400, 404, 405, 413, 422, 429, 500)."""

    model_config = ConfigDict(extra="forbid")
    detail: str = Field(description="what went wrong, one line")
    fix: str = Field(description="what to do about it")
    errors: list[FieldError] = Field(
        description="one entry per invalid field (422 on a request body); otherwise empty"
    )
    retry_after_s: int | None = Field(
        None, description="429 only: seconds to wait, as in the Retry-After header"
    )


def error_docs(
    *statuses: int, what: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses, each with the real error body (``what``:
    descriptions that differ from the usual ones)."""
    what = {
        400: "Host header not allowed, or a malformed header",
        404: "no such video (unknown id, or removed by the storage policy)",
        413: "request body too large",
        422: "invalid field (text, language, engine, chunks, audio_id) or input the TTS "
        "engine cannot speak",
        429: "job queue full; see the Retry-After header",
        500: "internal error (the server log has details)",
    } | (what or {})
    return {s: {"model": ErrorBody, "description": what[s]} for s in statuses}


StreamState = Literal["queued", "running", "done", "failed", "cancelled"]


class StreamStarted(BaseModel):
    id: str = Field(description="opaque id of this job (32 hex digits); later its video id")
    strategy: str
    state: StreamState = Field(
        description="queued (waiting for a slot) → running → done | failed | cancelled"
    )
    playlist_url: str = Field(
        description="/streams/{id}/index.m3u8: an HLS EVENT playlist that grows while the job "
        "renders (404 until its first segment exists: wait for playable) and is closed "
        "(#EXT-X-ENDLIST) when it ends"
    )
    status_url: str = Field(description="/api/stream/jobs/{id}: poll it (GET) or cancel (DELETE)")


class StreamStatus(StreamStarted):
    playable: bool = Field(description="the playlist lists at least one segment")
    elapsed_s: float = Field(description="seconds since the request arrived")
    idle_cancel_s: float = Field(
        description="a queued or running job nobody has asked about (status, playlist or "
        "segment) for this long is cancelled"
    )
    result: GenerateResponse | None = Field(
        None,
        description="done: what /api/generate answers (video_url, timings with "
        "first_playable_s, stall_s, total, ...)",
    )
    error: ErrorBody | None = Field(None, description="failed or cancelled: why, and the fix")
    error_status: int | None = Field(
        None, description="failed: the HTTP status /api/generate would have answered"
    )


def request_models(cfg: dict[str, Any]) -> tuple[type[BaseModel], type[BaseModel]]:
    """Request bodies with the configured limits baked in (FastAPI validates them)."""
    max_chars = cfg["text"]["max_chars"]
    default_lang = cfg["text"]["lang"]
    default_engine = cfg["tts"]["engine"]
    max_chunks = cfg["plan"]["max_chunks"]

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [{"text": "Привет, мир!", "lang": "ru"}, {"audio_id": "0" * 32}]
            },
        )
        text: str | None = Field(
            None,
            description=f"what the avatar says (1–{max_chars} characters, at least one letter, "
            "digit or symbol; control characters other than \\n \\r \\t are refused)",
            json_schema_extra={"pattern": NO_CONTROLS},
        )
        audio_id: str | None = Field(
            None,
            description="instead of text: the audio_id of an earlier job, whose WAV is "
            "rendered again without speech synthesis",
            json_schema_extra={"pattern": f"^{JOB_ID.pattern}$"},
        )
        engine: ENGINE_NAMES | None = Field(
            None, description=f"TTS engine (default: the config's, now '{default_engine}')"
        )
        lang: str = Field(default_lang, description="language tag, e.g. en, ru, de")

        @field_validator("text")
        @classmethod
        def _text(cls, v: str | None) -> str | None:
            if v is None:
                return v
            try:
                return tts.validate_text(v, max_chars)
            except InputError as exc:
                raise invalid(exc) from None

        @field_validator("audio_id")
        @classmethod
        def _audio_id(cls, v: str | None) -> str | None:
            if v is not None and not JOB_ID.fullmatch(v):
                raise ValueError("must be the 32-hex-digit audio_id an earlier job returned")
            return v

        @field_validator("lang")
        @classmethod
        def _lang(cls, v: str, info: ValidationInfo) -> str:
            if "engine" not in info.data:  # the engine itself was invalid: reported already
                return v
            try:
                tts.resolve_engine(info.data["engine"] or default_engine, v)
            except LipbenchError as exc:
                raise invalid(exc) from None
            return v

        @model_validator(mode="after")
        def _one_source(self) -> GenerateRequest:
            if (self.text is None) == (self.audio_id is None):
                raise ValueError(
                    "give either text or audio_id (an earlier job's audio), not both or neither"
                )
            return self

    class ParallelRequest(GenerateRequest):
        chunks: int | None = Field(
            None,
            strict=True,  # a JSON number: true and "2" are refused, not read as 1 and 2
            ge=1,
            le=max_chunks,
            description="force a chunk count (default: the planner decides; short audio "
            "gives 1 chunk, i.e. no parallelism)",
        )

    return GenerateRequest, ParallelRequest
