"""Tests for lipbench.tts. All offline: gTTS is pointed at local sockets, never at Google."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import lipbench
from lipbench import tts
from lipbench.errors import InputError, TTSError
from lipbench.tts import espeak as espeak_engine
from lipbench.tts import piper as piper_engine

SILENCE_RMS = 100.0  # int16 units; espeak/piper speech is in the thousands


def speech_stats(path: Path) -> tuple[int, float, float]:
    """(sample rate, seconds, RMS in int16 units) of a mono WAV."""
    audio, sr = sf.read(str(path), dtype="int16")
    assert audio.ndim == 1, "expected mono"
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    return sr, len(audio) / sr, rms


def assert_speech(path: Path, sr_expected: int = 22050) -> None:
    assert path.is_file()
    info = sf.info(str(path))
    assert info.channels == 1 and info.subtype == "PCM_16"
    sr, seconds, rms = speech_stats(path)
    assert sr == sr_expected
    assert seconds > 0.5
    assert rms > SILENCE_RMS


def only_file(folder: Path) -> list[str]:
    """Everything in ``folder``, temp files included, so leftovers are caught."""
    return sorted(p.name for p in folder.iterdir())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter that imports this checkout's lipbench; its stdout."""
    src = str(Path(lipbench.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# --- the package itself ---------------------------------------------------------------


def test_import_is_cheap() -> None:
    # The workflow and the torch-free job module import lipbench.tts for ENGINES only.
    heavy = ["numpy", "torch", "piper", "onnxruntime", "gtts", "soundfile", "espeakng_loader"]
    out = run_python(
        "import sys, lipbench.tts as t; print(t.ENGINES); "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    assert out.splitlines() == ["('auto', 'piper', 'espeak', 'gtts')", "[]"]


def test_unavailable_engine_is_an_input_error() -> None:
    # The server answers 422 for InputError; old callers still catch TTSError.
    assert issubclass(tts.EngineUnavailableError, InputError)
    assert issubclass(tts.EngineUnavailableError, TTSError)


# --- offline engines ------------------------------------------------------------------


def test_piper_english(tmp_path: Path) -> None:
    out = tmp_path / "en.wav"
    res = tts.synthesize("Hello world, this is a lip sync test.", "en", out, engine="piper")
    assert res.engine == "piper" and res.lang == "en" and res.sample_rate == 22050
    assert res.path == out and res.seconds > 0
    assert_speech(out)
    assert only_file(tmp_path) == ["en.wav"]


@pytest.mark.parametrize(
    ("lang", "text"), [("ru", "Привет, мир"), ("en", "Hello world, how are you?")]
)
def test_espeak_speaks(tmp_path: Path, lang: str, text: str) -> None:
    out = tmp_path / f"{lang}.wav"
    res = tts.synthesize(text, lang, out, engine="espeak")
    assert res.engine == "espeak" and res.lang == lang and res.sample_rate == 22050
    assert_speech(out)


def test_espeak_languages_are_real() -> None:
    langs = tts.supported_languages("espeak")
    assert {"ru", "en", "de", "fr"} <= set(langs)
    assert len(langs) > 50
    # Faroese has a voice file but no dictionary in the shipped data: not offered.
    assert "fo" not in langs


def test_auto_picks_best_offline_engine(tmp_path: Path) -> None:
    assert tts.resolve_engine("auto", "en") == "piper"
    assert tts.resolve_engine("auto", "en_US") == "piper"
    assert tts.resolve_engine("auto", "ru") == "espeak"
    assert tts.resolve_engine("auto", "RU-ru") == "espeak"
    res = tts.synthesize("Привет, мир", "ru", tmp_path / "ru.wav")
    assert res.engine == "espeak"
    res = tts.synthesize("Hello there.", "en", tmp_path / "en.wav")
    assert res.engine == "piper"


def test_auto_skips_an_engine_that_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> list[str]:
        raise tts.EngineUnavailableError("piper-tts is not installed", "pip install piper-tts")

    monkeypatch.setattr(piper_engine, "languages", missing)
    assert tts.resolve_engine("auto", "en") == "espeak"
    with pytest.raises(tts.EngineUnavailableError, match="not installed"):
        tts.resolve_engine("piper", "en")
    listed = {e["name"]: e["languages"] for e in tts.list_engines()}
    assert listed["piper"] == [] and "en" in listed["auto"]


def test_listing() -> None:
    engines = {e["name"]: e for e in tts.list_engines()}
    assert tuple(engines) == tts.ENGINES
    assert engines["gtts"]["offline"] is False
    assert engines["piper"]["offline"] and engines["espeak"]["offline"]
    assert "en" in engines["piper"]["languages"] and "ru" not in engines["piper"]["languages"]
    assert {"en", "ru"} <= set(engines["auto"]["languages"])
    assert "ru" in engines["gtts"]["languages"]
    assert tts.output_suffix("gtts") == ".mp3"
    assert tts.output_suffix("auto") == tts.output_suffix("espeak") == ".wav"


# --- deterministic output -------------------------------------------------------------

SENTENCE = "Hello world. This sentence tests the lip sync pipeline."


@pytest.mark.parametrize("engine", ["piper", "espeak"])
def test_same_text_gives_identical_bytes(tmp_path: Path, engine: str) -> None:
    # Both engines used to differ on every call (piper: noise; espeak: state kept between
    # utterances), so Compare rendered two different WAVs. Three calls, one process.
    first, second = tmp_path / "a.wav", tmp_path / "b.wav"
    tts.synthesize(SENTENCE, "en", first, engine=engine)
    tts.synthesize("A different sentence in between.", "en", tmp_path / "c.wav", engine=engine)
    tts.synthesize(SENTENCE, "en", second, engine=engine)
    assert sha256(first) == sha256(second)
    assert sha256(first) != sha256(tmp_path / "c.wav")
    assert_speech(first)


def test_espeak_is_identical_across_languages_and_calls(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.wav" for i in range(3)]
    tts.synthesize("Привет, мир", "ru", paths[0], engine="espeak")
    tts.synthesize(SENTENCE, "en", paths[1], engine="espeak")
    tts.synthesize("Привет, мир", "ru", paths[2], engine="espeak")
    assert sha256(paths[0]) == sha256(paths[2]) != sha256(paths[1])


@pytest.mark.process
def test_identical_bytes_in_another_process(tmp_path: Path) -> None:
    here = {}
    for engine in ("piper", "espeak"):
        out = tmp_path / f"{engine}.wav"
        tts.synthesize(SENTENCE, "en", out, engine=engine)
        here[engine] = sha256(out)
    code = (
        "import hashlib, pathlib\n"
        "from lipbench import tts\n"
        f"d = pathlib.Path({str(tmp_path / 'child')!r})\n"
        "for e in ('piper', 'espeak'):\n"
        f"    tts.synthesize({SENTENCE!r}, 'en', d / 'o.wav', engine=e)\n"
        "    print(e, hashlib.sha256((d / 'o.wav').read_bytes()).hexdigest())\n"
    )
    there = dict(line.split() for line in run_python(code).splitlines())
    assert there == here


# --- bad input ------------------------------------------------------------------------


def test_validate_text() -> None:
    assert tts.validate_text("  hi \n", 10) == "hi"
    assert tts.validate_text("a\r\nb\tc") == "a\r\nb\tc"  # line breaks and tabs are text
    assert tts.validate_text("$5 + 3 = 8?") == "$5 + 3 = 8?"
    assert tts.validate_text("¿Qué? ©") == "¿Qué? ©"  # one symbol is enough
    with pytest.raises(InputError, match="empty"):
        tts.validate_text(" \n\t ", 10)
    with pytest.raises(InputError, match="limit of 10"):
        tts.validate_text("x" * 11, 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello\x00world", r"control character, U\+0000 \(NUL\), at position 6"),
        ("\x1b[31mred", r"U\+001B \(ESC\), at position 1"),
        ("ok\x7f", r"U\+007F \(DEL\), at position 3"),
        ("  a\x85b", r"U\+0085, at position 4"),  # C1 control; position counts the spaces
        ("x\ud800y", r"lone surrogate, U\+D800, at position 2"),
        ("!!! ... ???", "no letter, digit or symbol"),
        ("«—», ¡¿ …", "no letter, digit or symbol"),
        ("\u0301\u0301", "no letter, digit or symbol"),  # combining marks alone
    ],
)
def test_validate_text_refuses(text: str, expected: str) -> None:
    with pytest.raises(InputError, match=expected) as err:
        tts.validate_text(text)
    assert " — " in str(err.value)  # problem — fix


@pytest.mark.parametrize(
    ("text", "lang", "engine", "out_name", "expected"),
    [
        ("", "en", "auto", "a.wav", "empty"),
        ("   \n\t", "en", "espeak", "a.wav", "empty"),
        ("x" * 5001, "en", "auto", "a.wav", "limit of 5000"),
        ("hello", "xx", "auto", "a.wav", "'xx' is not supported"),
        ("hello", "xx", "espeak", "a.wav", "'xx' is not supported"),
        ("привет", "ru", "piper", "a.wav", "'espeak'"),  # the fix names who can do it
        ("hello", "en", "festival", "a.wav", "unknown TTS engine"),
        ("hello", "en", "gtts", "a.wav", "'.mp3'"),
        ("hello", "en", "espeak", "a.mp3", "'.wav'"),
        ("!!! ... ???", "en", "piper", "a.wav", "only punctuation"),
        ("!!! ... ???", "en", "espeak", "a.wav", "only punctuation"),
        ("hi\x00there", "en", "auto", "a.wav", "position 3"),
        ("^", "en", "piper", "a.wav", "piper produced no audio"),  # passes validation
        ("^", "en", "espeak", "a.wav", "espeak produced no audio"),
    ],
)
def test_bad_input(
    tmp_path: Path, text: str, lang: str, engine: str, out_name: str, expected: str
) -> None:
    with pytest.raises(InputError, match=expected) as err:
        tts.synthesize(text, lang, tmp_path / out_name, engine=engine)
    message = str(err.value)
    assert "\n" not in message and " — " in message  # one line: problem — fix
    assert only_file(tmp_path) == []


def test_espeak_child_that_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, data = espeak_engine._paths()
    monkeypatch.setattr(espeak_engine, "_paths", lambda: (tmp_path / "missing.so", data))
    with pytest.raises(tts.EngineUnavailableError, match="cannot start"):
        espeak_engine.synth("hello", "en", tmp_path / "x.wav")
    assert only_file(tmp_path) == []


def test_unsupported_language_names_alternatives() -> None:
    with pytest.raises(InputError) as err:
        tts.resolve_engine("piper", "ru")
    assert "espeak" in str(err.value) and "gtts" in str(err.value)


# --- gTTS, against local sockets ------------------------------------------------------


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # gTTS routes through urllib's proxies (and ignores no_proxy); keep the test local.
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


def point_gtts_at(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """gTTS builds its endpoint with gtts.tts._translate_url; send it to localhost instead."""
    import gtts.tts

    monkeypatch.setattr(
        gtts.tts, "_translate_url", lambda tld="com", path="": f"http://127.0.0.1:{port}/{path}"
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once closed: connections are refused


def test_gtts_unreachable_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    point_gtts_at(monkeypatch, closed_port())
    start = time.monotonic()
    with pytest.raises(tts.EngineUnavailableError) as err:
        tts.synthesize("Hello world", "en", tmp_path / "g.mp3", engine="gtts")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert isinstance(err.value, InputError)  # the caller can fix it: a server's 422
    assert "piper" in message and "espeak" in message
    assert only_file(tmp_path) == []  # no 0-byte mp3, no temp file


def test_gtts_silent_server_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None
) -> None:
    # Listens (so the TCP connect succeeds) but never answers: only the read timeout saves us.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        point_gtts_at(monkeypatch, server.getsockname()[1])
        start = time.monotonic()
        with pytest.raises(tts.EngineUnavailableError) as err:
            tts.synthesize("Hello world", "en", tmp_path / "g.mp3", engine="gtts", timeout_s=1.0)
        elapsed = time.monotonic() - start
    assert elapsed < 5
    assert "espeak" in str(err.value)
    assert only_file(tmp_path) == []


@pytest.fixture
def fake_google() -> Iterator[int]:
    """A local stand-in for the batchexecute endpoint that returns a short real MP3."""
    buf = io.BytesIO()
    t = np.arange(12000) / 24000
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), 24000, format="MP3")
    b64 = base64.b64encode(buf.getvalue()).decode("ascii")
    body = (
        ')]}\'\n\n[["wrb.fr","jQ1olc","[\\"' + b64 + '\\"]",null,null,null,"generic"]]\n'
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_gtts_success_path_with_fake_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: None, fake_google: int
) -> None:
    point_gtts_at(monkeypatch, fake_google)
    out = tmp_path / "g.mp3"
    res = tts.synthesize("Привет, мир", "ru", out, engine="gtts")
    assert res.engine == "gtts" and res.lang == "ru" and res.sample_rate == 24000
    assert out.stat().st_size > 0
    assert only_file(tmp_path) == ["g.mp3"]
