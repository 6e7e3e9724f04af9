"""Speech of an exact duration for the bench: TTS once per duration (timed, kept out of the
strategy comparison), then cut — or looped — to D seconds and converted to 16 kHz."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import audio as audio_mod
from .. import tts as tts_mod
from ..errors import InputError

# Read aloud by the built-in text source; cycled when a duration needs more speech.
BUILTIN_SENTENCES = [
    "Text becomes speech, and speech becomes a talking face, one frame at a time.",
    "Every frame of the video looks at a short window of the sound around it.",
    "The planner cuts the audio into chunks, and each chunk goes to its own replica.",
    "When the replicas finish, the chunks are joined and the sound is added once.",
    "On a small machine, two workers share the same two cores, so the gain may be small.",
    "That is why we measure, instead of guessing, and why we repeat every measurement.",
    "Short clips start quickly, while long clips spend most of their time in the model.",
    "The report compares the measured best choice with the rule of thumb from the seed.",
]
PIPER_CHARS_PER_S = 14.0  # rough speaking rate, only to decide how much text to synthesise
SPEECH_COLUMNS = ["duration_s", "source", "engine", "lang", "tts_s", "tts_speech_s", "looped"]


@dataclass
class Speech:
    duration_s: float
    wav: Path
    source: str  # "builtin", a text file or an audio file
    engine: str | None
    lang: str | None
    tts_s: float | None  # synthesis wall time (None for an audio source)
    tts_speech_s: float  # length of what was synthesised (or of the audio file)
    looped: bool


def fit_length(samples: np.ndarray, n: int, fade: int = 320) -> np.ndarray:
    """Exactly ``n`` samples: cut, or loop the clip; a short fade-out hides the cut's click."""
    if len(samples) == 0:
        raise InputError("the speech source has no samples", "use another text or audio file")
    reps = math.ceil(n / len(samples))
    out = np.tile(samples, reps)[:n].astype(np.float32, copy=True)
    k = min(fade, n)
    out[n - k :] *= np.linspace(1.0, 0.0, k, dtype=np.float32)
    return out


def _sentences_for(seconds: float, sentences: list[str]) -> str:
    """Enough sentences (cycled) for about ``seconds`` of speech, with a 15 % margin."""
    want = seconds * PIPER_CHARS_PER_S * 1.15
    picked: list[str] = []
    i = 0
    while sum(len(s) + 1 for s in picked) < want:
        picked.append(sentences[i % len(sentences)])
        i += 1
    return " ".join(picked)


def _source_kind(text_source: str) -> str:
    if text_source == "builtin":
        return "builtin"
    p = Path(text_source)
    if not p.is_file():
        raise InputError(
            f"text source not found: {text_source}",
            "use 'builtin', a .txt file of text, or an audio file",
        )
    return "text" if p.suffix.lower() in (".txt", ".md") else "audio"


def make_speech(
    durations: Iterable[float],
    workdir: str | os.PathLike,
    cfg: dict[str, Any],
    text_source: str = "builtin",
    lang: str | None = None,
    engine: str | None = None,
) -> dict[float, Speech]:
    """One 16 kHz WAV of exactly D s per duration under ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kind = _source_kind(text_source)
    lang = lang or cfg["text"]["lang"]
    out: dict[float, Speech] = {}
    if kind == "audio":
        wav = audio_mod.convert_to_wav16k(text_source, workdir / "source16k.wav", cfg["video"]["ffmpeg"])  # fmt: skip
        samples = audio_mod.read_wav(wav)
        for d in durations:
            n = round(d * audio_mod.SAMPLE_RATE)
            path = audio_mod.write_wav16k(workdir / f"speech_{d:g}s.wav", fit_length(samples, n))
            out[d] = Speech(d, path, text_source, None, None, None, len(samples) / audio_mod.SAMPLE_RATE, n > len(samples))  # fmt: skip
        return out
    if kind == "builtin":
        sentences = BUILTIN_SENTENCES
    else:
        text = Path(text_source).read_text(encoding="utf-8").strip()
        sentences = [s.strip() + "." for s in text.replace("\n", " ").split(".") if s.strip()]
        if not sentences:
            raise InputError(f"{text_source} has no text", "put a few sentences in it")
    concrete = tts_mod.resolve_engine(engine or cfg["tts"]["engine"], lang)
    # Load the voice once, untimed: the per-duration TTS times then compare like with like.
    tts_mod.synthesize(sentences[0], lang, workdir / f"tts_warmup{tts_mod.output_suffix(concrete)}", engine=concrete, max_chars=cfg["text"]["max_chars"], timeout_s=cfg["tts"]["timeout_s"])  # fmt: skip
    for d in durations:
        text = _sentences_for(d, sentences)
        raw = workdir / f"tts_{d:g}s{tts_mod.output_suffix(concrete)}"
        res = tts_mod.synthesize(text, lang, raw, engine=concrete, max_chars=cfg["text"]["max_chars"], timeout_s=cfg["tts"]["timeout_s"])  # fmt: skip
        wav16 = audio_mod.convert_to_wav16k(raw, workdir / f"tts_{d:g}s_16k.wav", cfg["video"]["ffmpeg"])  # fmt: skip
        samples = audio_mod.read_wav(wav16)
        n = round(d * audio_mod.SAMPLE_RATE)
        path = audio_mod.write_wav16k(workdir / f"speech_{d:g}s.wav", fit_length(samples, n))
        out[d] = Speech(d, path, text_source, res.engine, res.lang, round(res.seconds, 4), len(samples) / audio_mod.SAMPLE_RATE, n > len(samples))  # fmt: skip
    return out


def speech_row(s: Speech) -> dict[str, Any]:
    return {k: getattr(s, k) for k in SPEECH_COLUMNS}


def noise_wav(
    path: Path, seconds: float, seed: int, fps: float = 25.0, silent_at: Iterable[float] = ()
) -> Path:
    """Seeded noise: warm-up and cost-model clips (the network's work per frame does not
    depend on what is said). ``silent_at``: fractions of the clip (e.g. 1/2) where three
    frames are silent, so the planner's silence snapping cuts exactly there and the chunks of
    a cost-model run are equal."""
    n = max(1, round(seconds * audio_mod.SAMPLE_RATE))
    noise = np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1
    frames = max(1, round(seconds * fps))
    for frac in silent_at:
        cut = round(frac * frames)
        a = max(0, round((cut - 1) * audio_mod.SAMPLE_RATE / fps))
        b = min(n, round((cut + 2) * audio_mod.SAMPLE_RATE / fps))
        noise[a:b] = 0.0
    return audio_mod.write_wav16k(path, noise)
