"""One request, resolved once.

The config dict is read HERE and nowhere below: ``Settings.from_config`` turns it into typed
settings (job, plan, TTS, face, render, encoder), and ``GenerateRequest.build`` checks a
front end's arguments against them (job, text or audio, avatar, output names, stream) before
anything runs. The CLI, the server, the bench and the workflow's unit of work build one, and
the pipeline and everything under it take it as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import InputError
from .face.settings import FaceSettings
from .jobs import Job, JobSettings, resolve_job
from .outputs import OutputNames, check_destination, output_names, refuse_overwriting_input
from .video import EncoderSettings


@dataclass(frozen=True)
class PlanSettings:
    """The config's ``plan`` section (field names = its keys) and where the measured cost
    model lives."""

    policy: str
    objective: str
    chunks: int
    seconds_per_chunk: float
    min_parallel_s: float
    max_chunks: int
    snap_silence: bool
    snap_window_s: float
    cost_model: Path  # results_dir/bench/cost_model.json (the ``measured`` policy reads it)


@dataclass(frozen=True)
class TTSSettings:
    engine: str  # auto | piper | espeak | gtts
    timeout_s: float
    max_chars: int
    default_text: str
    default_lang: str


def cost_model_path(results_dir: str | os.PathLike) -> Path:
    """Where `lipbench bench` publishes its cost model and the ``measured`` policy reads it."""
    return Path(results_dir) / "bench" / "cost_model.json"


def _section(cls: type, values: Mapping[str, Any], **extra: Any) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **extra)


@dataclass(frozen=True)
class Settings:
    """Everything a run needs from the config, typed and built once."""

    job: JobSettings
    fps: float
    plan: PlanSettings
    tts: TTSSettings
    face: FaceSettings
    render_section: Mapping[str, Any]  # see ``render_options``
    encoder: EncoderSettings
    audio_bitrate: str
    results_dir: Path

    @property
    def ffmpeg(self) -> str:
        return self.encoder.ffmpeg

    def render_options(self) -> Any:
        """The asked ``render.RenderOptions`` (replicas resolve "auto"); built on use, as
        it imports torch and planning does not need it."""
        from .render import RenderOptions

        return _section(RenderOptions, self.render_section)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Settings:
        v, t = cfg["video"], cfg["text"]
        return cls(
            job=JobSettings.from_config(cfg),
            fps=float(cfg["fps"]),
            plan=_section(
                PlanSettings, cfg["plan"], cost_model=cost_model_path(cfg["results_dir"])
            ),
            tts=TTSSettings(
                engine=cfg["tts"]["engine"],
                timeout_s=float(cfg["tts"]["timeout_s"]),
                max_chars=int(t["max_chars"]),
                default_text=t["default"],
                default_lang=t["lang"],
            ),  # fmt: skip
            face=FaceSettings(**cfg["face"]),
            render_section=MappingProxyType(dict(cfg["render"])),
            encoder=EncoderSettings(
                fps=float(cfg["fps"]),
                crf=v["crf"],
                preset=v["preset"],
                ffmpeg=v["ffmpeg"],
                keyframe_s=float(v["keyframe_s"]),
                first_segment_s=float(v["first_segment_s"]),
                tune=v["tune"],
            ),  # fmt: skip
            audio_bitrate=v["audio_bitrate"],
            results_dir=Path(cfg["results_dir"]),
        )


@dataclass(frozen=True)
class Hooks:
    """Callbacks from a run to its front end."""

    # polled at each 8-frame tick (and between stages): True cancels the job
    should_stop: Callable[[], bool] | None = None
    on_stream: Callable[[Path], None] | None = None  # the live playlist, once it has a segment


@dataclass(frozen=True)
class GenerateRequest:
    """One ``generate`` job, every choice made: what to say (text in a language with an
    engine, or an audio file), on which avatar, with which strategy, into which files."""

    job: Job
    settings: Settings
    outputs: OutputNames
    text: str | None  # exactly one of text / audio
    lang: str
    engine: str  # the concrete TTS engine (never "auto") when text is given
    audio: Path | None
    avatar: str  # a path or "default"
    stream: bool = False
    keep_chunks: bool = False
    progress: bool = True
    # keep the printed live playlist's path valid after the run (the CLI: a player reads it)
    keep_live_stream: bool = False
    hooks: Hooks = field(default_factory=Hooks)
    # (epoch seconds, what it is) that first_frame_s / first_playable_s count from;
    # None: this process's start
    origin: tuple[float, str] | None = None
    # when a front end reached its steps (epoch seconds): "cli" (its main() ran) and
    # "imports" (the pipeline imported); the record's timings.startup splits by them
    marks: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        out: str | os.PathLike,
        *,
        text: str | None = None,
        audio: str | os.PathLike | None = None,
        lang: str | None = None,
        engine: str | None = None,
        avatar: str | None = None,
        strategy: str = "sequential",
        models: list[str] | None = None,
        chunks: int | None = None,
        threads: int | None = None,
        stream: bool = False,
        keep_chunks: bool = False,
        progress: bool = True,
        keep_live_stream: bool = False,
        hooks: Hooks | None = None,
        origin: tuple[float, str] | None = None,
        marks: Mapping[str, float] | None = None,
    ) -> GenerateRequest:
        """Check everything a front end gave before any work: a bad flag, text, language,
        --out or stream setting fails here in one line. Neither text nor audio: the
        config's default text."""
        from . import tts

        job = resolve_job(settings.job, strategy, models, chunks, threads)
        if text is not None and audio is not None:
            raise InputError("give either text or an audio file", 'use --text "…" or --audio speech.wav')  # fmt: skip
        if text is None and audio is None:
            text = settings.tts.default_text
        lang = lang or settings.tts.default_lang
        concrete = ""
        if text is not None:
            tts.validate_text(text, settings.tts.max_chars)
            concrete = tts.resolve_engine(engine or settings.tts.engine, lang)
        final = output_names(out)
        avatar = avatar or settings.face.avatar
        refuse_overwriting_input(final, [audio, avatar])
        check_destination(final)
        if stream:
            from .stream.segments import check_streamable

            check_streamable(settings.encoder)
        return cls(job=job, settings=settings, outputs=final, text=text, lang=lang,
                   engine=concrete, audio=Path(audio) if audio is not None else None,
                   avatar=avatar, stream=stream, keep_chunks=keep_chunks, progress=progress,
                   keep_live_stream=keep_live_stream and stream, hooks=hooks or Hooks(),
                   origin=origin, marks=MappingProxyType(dict(marks or {})))  # fmt: skip
