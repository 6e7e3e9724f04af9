"""libespeak-ng through ctypes. Standard library only: :mod:`lipbench.tts.espeak` also runs
this file as a child process (``python -I _espeak_lib.py ...``), one per synthesis.

Why a child per synthesis: the library keeps state between utterances that no API call
resets (``static int Flutter_ix`` in wavegen's pitch flutter, among others; neither
``espeak_Terminate`` + ``espeak_Initialize`` nor ``espeak_ng_SetRandSeed`` clears it), so
the second call in a process already differs from the first. The first utterance of a
fresh process is the same in every process. A child costs a few tens of milliseconds.

Child protocol: argv = library path, data path, language tag, output WAV path; stdin =
the text (UTF-8). Exit 0 and the sample rate on stdout, or a non-zero status from
``EXIT_*`` with one line on stderr.
"""

from __future__ import annotations

import ctypes
import sys
import wave
from pathlib import Path
from typing import Any

AUDIO_OUTPUT_SYNCHRONOUS = 2
INIT_DONT_EXIT = 0x8000  # return an error instead of calling exit() on a bad data path
POS_CHARACTER = 1
CHARS_UTF8 = 1
EE_OK = 0

EXIT_INIT, EXIT_NO_VOICE, EXIT_SYNTH, EXIT_NO_AUDIO = 3, 4, 5, 6


class EspeakVoice(ctypes.Structure):
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


SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def open_library(lib_path: str | Path, data_path: str | Path) -> tuple[ctypes.CDLL, int]:
    """Load and initialise libespeak-ng; (library, sample rate). Raises OSError on failure."""
    lib = ctypes.CDLL(str(lib_path))
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(EspeakVoice))
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(EspeakVoice)]
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
    sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), INIT_DONT_EXIT)
    if sr <= 0:
        raise OSError(f"libespeak-ng failed to initialise with data at {data_path}")
    return lib, int(sr)


def _voice_dictionary(data_path: Path, identifier: str, first_lang: str) -> str:
    # A voice file may name its dictionary ("dictionary no" for nb); otherwise espeak
    # uses the primary subtag of the voice's first language.
    try:
        text = (data_path / "lang" / identifier).read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "dictionary":
                return parts[1]
    except OSError:
        pass
    return first_lang.split("-", 1)[0]


def list_languages(lib: ctypes.CDLL, data_path: Path) -> list[str]:
    """Language tags of the voices whose dictionary ships with the data (sorted).

    Voices whose dictionary is missing (fo, kaa, xex in 1.52) are listed by espeak but
    would speak gibberish, so they are left out.
    """
    voices = lib.espeak_ListVoices(None)
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
        dictionary = _voice_dictionary(data_path, v.identifier.decode(), tags[0])
        if (data_path / f"{dictionary}_dict").is_file():
            langs.update(tags)
    return sorted(langs)


def set_voice(lib: ctypes.CDLL, lang: str) -> int:
    """Select the voice for ``lang``; the espeak status (EE_OK on success)."""
    props = EspeakVoice()
    lang_bytes = ctypes.create_string_buffer(lang.encode("ascii"))
    props.languages = ctypes.cast(lang_bytes, ctypes.c_void_p)
    return int(lib.espeak_SetVoiceByProperties(ctypes.byref(props)))


def synthesize_pcm(lib: ctypes.CDLL, text: str) -> tuple[int, bytes]:
    """(espeak status, 16-bit mono PCM) for ``text`` in the current voice."""
    chunks: list[bytes] = []

    def on_audio(wav: Any, numsamples: int, events: Any) -> int:
        if wav and numsamples > 0:
            chunks.append(ctypes.string_at(wav, numsamples * 2))
        return 0  # 0 = keep going

    callback = SynthCallback(on_audio)  # must stay referenced until espeak_Synth returns
    lib.espeak_SetSynthCallback(callback)
    data = text.encode("utf-8")
    rc = lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    return int(rc), b"".join(chunks)


def main(argv: list[str]) -> int:
    lib_path, data_path, lang, out_path = argv
    text = sys.stdin.buffer.read().decode("utf-8")
    try:
        lib, sr = open_library(lib_path, data_path)
    except OSError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INIT
    rc = set_voice(lib, lang)
    if rc != EE_OK:
        print(f"espeak has no voice for language {lang!r} (error {rc})", file=sys.stderr)
        return EXIT_NO_VOICE
    rc, pcm = synthesize_pcm(lib, text)
    if rc != EE_OK:
        print(f"espeak_Synth failed with error {rc}", file=sys.stderr)
        return EXIT_SYNTH
    if not pcm.strip(b"\x00"):
        return EXIT_NO_AUDIO
    with wave.open(out_path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm)
    print(sr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
