"""Request and response bodies (pydantic), the one error body every failure uses, and
the OpenAPI ``responses`` entries that document it."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .. import tts
from ..errors import InputError, LipbenchError

JOB_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16): ids of jobs, videos and audio
ENGINE_NAMES = Literal["auto", "piper", "espeak", "gtts"]
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


class ChunkOut(BaseModel):
    chunk: int
    replica: int
    model: str
    frame_start: int
    frame_end: int
    frames: int
    start_offset_s: float
    end_offset_s: float
    wall_s: float
    fps: float


class GenerateResponse(BaseModel):
    id: str = Field(description="opaque id of this job (32 hex digits)")
    video_url: str = Field(description="/videos/{id}.mp4: GET or HEAD, range requests")
    audio_id: str = Field(
        description="pass it as audio_id to render this job's WAV again (e.g. with the other "
        "strategy: both sides of a comparison then render identical audio)"
    )
    audio_sha256: str = Field(description="sha256 of the 16 kHz WAV this job rendered")
    audio_from: str | None = Field(
        None, description="the job whose WAV this job rendered (null: synthesised here)"
    )
    strategy: str
    models: list[str]
    timings: dict[str, float] = Field(
        description="seconds per stage from the run record: tts, convert, detect, split, "
        "infer, merge, total (model loading is not included: replicas are warm); latency: "
        "first_frame_s (first frame rendered), first_playable_s (a stream job: its first "
        "segment listed; otherwise the finished MP4), stall_s (how long playback at the "
        "video's fps would wait for segments; 0 without streaming), counted from "
        "latency_origin"
    )
    latency_origin: str | None = Field(
        None,
        description="what the latency timings count from: 'request' (this request "
        "arrived, queue wait included)",
    )
    render_s: float = Field(
        description="WAV → MP4 (detect, split, infer, merge): total − tts − convert; what a "
        "comparison of strategies should compare"
    )
    plan: dict[str, Any]
    weights: dict[str, Any]
    weights_trained: bool
    weights_note: str | None = None
    audio_duration_s: float
    frames: int
    fps: float
    render_fps: float | None = None
    chunks: list[ChunkOut] = Field(default_factory=list)
    tts: dict[str, Any] | None = None
    stream: dict[str, Any] | None = Field(
        None,
        description="a stream job: segment_s, segments, and when each segment was "
        "listed (ready_s, from latency_origin) with its length (durations_s), in play order",
    )
    queue_wait_s: float = Field(description="time spent waiting for a free slot (not in total)")
    load_1m: float = Field(
        description="the machine's 1-minute load average when the job ended (its own job "
        "accounts for up to `cores`; much more means other work shared the CPU)"
    )
    cores: int = Field(description="cores this server may use")


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
            ge=1,
            le=max_chunks,
            description="force a chunk count (default: the planner decides; short audio "
            "gives 1 chunk, i.e. no parallelism)",
        )

    return GenerateRequest, ParallelRequest
