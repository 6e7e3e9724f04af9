"""espeak-ng (formant synthesis, offline, ~100 languages): libespeak-ng and its data from
``espeakng_loader``, driven through ctypes (:mod:`lipbench.tts._espeak_lib`).

Languages are listed in this process (listing does not touch the synthesiser's state).
Each synthesis runs in a fresh child process, because the library carries state from one
utterance to the next that no call resets: so the same text and language give the same
WAV bytes on every call (see ``_espeak_lib``). Children need no lock: calls may overlap.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from lipbench.errors import InputError, TTSError
from lipbench.tts import _espeak_lib
from lipbench.tts._common import NO_SPEECH_FIX, EngineUnavailableError, fallback_fix

CHILD_TIMEOUT_S = 300.0  # 5000 characters take ~2 s; only a wedged child gets near this

_REINSTALL_FIX = "reinstall espeakng-loader, or use engine 'piper' for English"

_lock = threading.Lock()
_languages: list[str] | None = None


def _paths() -> tuple[Path, Path]:
    """(libespeak-ng, its data folder) as shipped by espeakng_loader."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise EngineUnavailableError(
            "espeakng_loader is not installed", "pip install espeakng-loader"
        ) from exc
    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


def languages() -> list[str]:
    """Language tags with a voice and a dictionary (sorted); read once per process."""
    global _languages
    with _lock:
        if _languages is None:
            lib_path, data_path = _paths()
            try:
                lib, _ = _espeak_lib.open_library(lib_path, data_path)
            except OSError as exc:
                raise EngineUnavailableError(
                    f"libespeak-ng cannot load: {exc}", _REINSTALL_FIX
                ) from exc
            _languages = _espeak_lib.list_languages(lib, data_path)
    return list(_languages)


def synth(text: str, lang: str, tmp: Path) -> int:
    """Speak ``text`` in ``lang`` into the WAV file ``tmp``; return its sample rate."""
    lib_path, data_path = _paths()
    # -I: the child imports the standard library only, whatever PYTHONPATH says.
    cmd = [sys.executable, "-I", _espeak_lib.__file__, str(lib_path), str(data_path), lang]
    try:
        proc = subprocess.run(
            [*cmd, str(tmp)],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TTSError(
            f"espeak did not finish within {CHILD_TIMEOUT_S:g} s", "shorten the text"
        ) from exc
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    detail = lines[-1] if lines else f"exit status {proc.returncode}"
    if proc.returncode == _espeak_lib.EXIT_NO_AUDIO:
        raise InputError("espeak produced no audio for this text", NO_SPEECH_FIX)
    if proc.returncode == _espeak_lib.EXIT_INIT:
        raise EngineUnavailableError(f"libespeak-ng cannot start: {detail}", _REINSTALL_FIX)
    if proc.returncode == _espeak_lib.EXIT_NO_VOICE:
        raise TTSError(detail, "pick another language or engine (see `lipbench tts --list`)")
    if proc.returncode != 0:
        raise TTSError(f"espeak failed: {detail}", fallback_fix("espeak"))
    return int(proc.stdout.decode("ascii").strip())
