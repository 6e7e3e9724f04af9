"""Google Translate TTS through gTTS (online): MP3, 24 kHz mono.

Every failure to reach or use the service is an :class:`EngineUnavailableError` (an
InputError: the caller fixes it by picking an offline engine). gTTS's own ``save()``
opens the target before the request, leaving a 0-byte MP3 when offline, so it writes
only to the temp file it is given.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from lipbench.tts._common import OFFLINE_FIX, EngineUnavailableError

SAMPLE_RATE = 24000  # what Google's MP3s use; only a fallback if the header is unreadable

_NOT_INSTALLED_FIX = "pip install gTTS, or use 'piper'/'espeak'"


def languages() -> list[str]:
    try:
        from gtts.lang import tts_langs
    except ImportError as exc:
        raise EngineUnavailableError("gTTS is not installed", _NOT_INSTALLED_FIX) from exc
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
        raise EngineUnavailableError(
            f"gTTS: no answer from {host}:{port} within {timeout_s:g} s", OFFLINE_FIX
        )
    if error:
        raise EngineUnavailableError(f"gTTS cannot reach {host}:{port} ({error[0]})", OFFLINE_FIX)


def synth(text: str, lang: str, tmp: Path, timeout_s: float) -> int:
    """Speak ``text`` in ``lang`` into the MP3 file ``tmp``; return its sample rate.

    ``timeout_s`` bounds each network step (connect, and each read).
    """
    try:
        from gtts import gTTS, gTTSError
    except ImportError as exc:
        raise EngineUnavailableError("gTTS is not installed", _NOT_INSTALLED_FIX) from exc
    tts = gTTS(text, lang=lang, timeout=(timeout_s, timeout_s))
    requests_ = tts._prepare_requests()  # the exact URL(s) gTTS will call
    if requests_:
        _preflight(str(requests_[0].url), timeout_s)
    try:
        with open(tmp, "wb") as fh:
            tts.write_to_fp(fh)
    except gTTSError as exc:
        raise EngineUnavailableError(f"gTTS failed: {exc}", OFFLINE_FIX) from exc
    if tmp.stat().st_size == 0:
        raise EngineUnavailableError("gTTS returned no audio", OFFLINE_FIX)
    try:
        import soundfile

        return int(soundfile.info(str(tmp)).samplerate)
    except Exception:
        return SAMPLE_RATE
