"""Tests for lipbench.tts. All offline: gTTS is pointed at local sockets, never at Google."""

from __future__ import annotations

import base64
import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lipbench import tts
from lipbench.errors import InputError, TTSError

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


# --- bad input ------------------------------------------------------------------------


def test_validate_text() -> None:
    assert tts.validate_text("  hi \n", 10) == "hi"
    with pytest.raises(InputError, match="empty"):
        tts.validate_text(" \n\t ", 10)
    with pytest.raises(InputError, match="limit of 10"):
        tts.validate_text("x" * 11, 10)


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
    with pytest.raises(TTSError) as err:
        tts.synthesize("Hello world", "en", tmp_path / "g.mp3", engine="gtts")
    assert time.monotonic() - start < 10
    message = str(err.value)
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
        with pytest.raises(TTSError) as err:
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
