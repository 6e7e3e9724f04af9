"""What every engine module shares: the error for an engine that cannot run, WAV writing,
and the check that an engine actually produced sound. Standard library only."""

from __future__ import annotations

import wave
from pathlib import Path

from lipbench.errors import InputError, TTSError

CONCRETE_ENGINES: tuple[str, ...] = ("piper", "espeak", "gtts")

OFFLINE_FIX = (
    "check the network, or use an offline engine: 'piper' (English) or 'espeak' (many languages)"
)
NO_SPEECH_FIX = "give text with pronounceable words (letters or digits), not only punctuation"


class EngineUnavailableError(InputError, TTSError):
    """The chosen engine cannot run here (offline service, package not installed).

    An InputError, because the caller can fix it by choosing another engine (a server
    answers 422); also a TTSError, so ``except TTSError`` keeps catching it.
    """


def fallback_fix(engine: str) -> str:
    others = [e for e in CONCRETE_ENGINES if e != engine]
    return f"try another engine ({', '.join(others)})"


def check_pcm(pcm: bytes, engine: str) -> None:
    """InputError when an engine returned nothing audible (no samples, or only zeros)."""
    if not pcm.strip(b"\x00"):
        raise InputError(f"{engine} produced no audio for this text", NO_SPEECH_FIX)


def write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    """16-bit mono PCM to a WAV file; the header depends only on the arguments."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
