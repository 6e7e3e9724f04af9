"""What the server answers for a finished job: a typed view derived from the run record.

The record's own fields (``RECORD_FIELDS``) keep the types ``record.RunRecord`` gives them —
the pydantic model is built from the dataclass's annotations, so a field changed there is
changed here, in the response and in the OpenAPI schema, with no second declaration. The
server adds only what the record cannot know (``ServerFields``: the job's id and URLs, the
WAV's hash, queue wait, load) and two derived numbers (``timings`` as numbers only,
``render_s``)."""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any

from pydantic import BaseModel, Field, create_model

from ..jobs import cpu_cores
from ..record import RunRecord, Timings

# the record's fields a response carries, as the record has them
RECORD_FIELDS: tuple[str, ...] = (
    "strategy", "models", "plan", "weights", "weights_trained", "weights_note",
    "audio_duration_s", "frames", "fps", "render_fps", "chunks", "tts", "stream",
)  # fmt: skip
DESCRIPTIONS = {
    "chunks": "each chunk as rendered (run.json's chunks): replica, model, threads, frames, "
    "offsets and wall time",
    "stream": "a stream job: segment_s, segments, and when each segment was listed (ready_s, "
    "from latency_origin) with its length (durations_s), in play order",
}


class ServerFields(BaseModel):
    """What the server adds to the record's fields."""

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
    timings: dict[str, float] = Field(
        description="the record's timings that are numbers (seconds): tts, convert, detect, "
        "mel, split, infer, merge, total (model loading is not included: replicas are warm); "
        "latency: first_frame_s (first frame rendered), first_playable_s (a stream job: its "
        "first segment listed; otherwise the finished MP4), stall_s (how long playback at the "
        "video's fps would wait for segments; 0 without streaming), counted from latency_origin"
    )
    latency_origin: str | None = Field(
        None,
        description="what the latency timings count from: 'request' (this request arrived, "
        "queue wait included)",
    )
    render_s: float = Field(
        description="WAV → MP4 (detect, split, infer, merge): total − tts − convert; what a "
        "comparison of strategies should compare"
    )
    queue_wait_s: float = Field(description="time spent waiting for a free slot (not in total)")
    load_1m: float = Field(
        description="the machine's 1-minute load average when the job ended (its own job "
        "accounts for up to `cores`; much more means other work shared the CPU)"
    )
    cores: int = Field(description="cores this server may use")


def _record_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(RunRecord)
    declared = {f.name: f for f in dataclasses.fields(RunRecord)}
    out: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        f = declared[name]  # KeyError here: the record lost a field the response promises
        default = f.default if f.default is not dataclasses.MISSING else ...
        out[name] = (hints[name], Field(default, description=DESCRIPTIONS.get(name)))
    return out


GenerateResponse: type[BaseModel] = create_model(
    "GenerateResponse",
    __base__=ServerFields,
    __doc__="A finished job: the run record's fields (typed as in lipbench.record.RunRecord) "
    "plus the server's.",
    **_record_fields(),
)


def number_timings(t: Timings) -> dict[str, float]:
    """The timings that are numbers (``latency_origin`` is a word; unset ones are left out)."""
    values = {f.name: getattr(t, f.name) for f in dataclasses.fields(t)}
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip


def response_view(rec: RunRecord, job_id: str, audio_sha256: str, audio_from: str | None,
                  elapsed_s: float) -> BaseModel:  # fmt: skip
    """The response for a finished job, from its record (no second measurement)."""
    t = rec.timings
    return GenerateResponse(
        id=job_id,
        video_url=f"/videos/{job_id}.mp4",
        audio_id=job_id,
        audio_sha256=audio_sha256,
        audio_from=audio_from,
        timings=number_timings(t),
        latency_origin=t.latency_origin,
        render_s=round(t.total - t.tts - t.convert, 4),
        queue_wait_s=round(max(0.0, elapsed_s - t.total), 3),
        load_1m=round(os.getloadavg()[0], 2),
        cores=cpu_cores(),
        **{name: getattr(rec, name) for name in RECORD_FIELDS},
    )
