"""Audio front end: conversion to 16 kHz mono int16, durations, the Wav2Lip mel."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from lipbench import audio
from lipbench.errors import InputError
from lipbench.ffmpeg import ffmpeg_exe


def _slaney_mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """Slaney-style mel filterbank written from its definition (independent of librosa)."""

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        f_sp = 200.0 / 3
        mel = f / f_sp
        min_log_hz = 1000.0
        logstep = np.log(6.4) / 27.0
        return np.where(
            f >= min_log_hz,
            min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
            mel,
        )

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        f_sp = 200.0 / 3
        min_log_hz = 1000.0
        min_log_mel = min_log_hz / f_sp
        logstep = np.log(6.4) / 27.0
        return np.where(
            m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m
        )

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, len(fft_freqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels])
    return weights * enorm[:, None]


def _reference_mel(x: np.ndarray) -> np.ndarray:
    """The spec's formula step by step, with plain numpy loops."""
    y = np.empty_like(x, dtype=np.float64)
    y[0] = x[0]
    y[1:] = x[1:] - 0.97 * x[:-1]
    n_fft, hop = 800, 200
    padded = np.pad(y, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    n_frames = 1 + len(x) // hop
    spec = np.stack(
        [np.abs(np.fft.rfft(padded[t * hop : t * hop + n_fft] * window)) for t in range(n_frames)],
        axis=1,
    )
    mel = _slaney_mel_filterbank(16000, n_fft, 80, 55.0, 7600.0) @ spec
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_mel_matches_independent_formula():
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (
        1 + np.sin(2 * np.pi * 3 * t)
    ) + 0.05 * rng.standard_normal(len(t))
    got = audio.melspectrogram(x.astype(np.float32))
    want = _reference_mel(x.astype(np.float32).astype(np.float64))
    assert got.shape == (80, 1 + len(x) // 200) == want.shape
    assert np.max(np.abs(got - want)) < 1e-3
    assert got.min() >= -4 and got.max() <= 4 and got.max() > 0  # not degenerate


def test_silence_is_minus_four():
    m = audio.melspectrogram(np.zeros(16000, dtype=np.float32))
    assert m.shape == (80, 81)
    assert np.all(m == -4.0)


def _ffmpeg_tone(path, rate: int, channels: int, seconds: float = 1.0):
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration={seconds}",
         "-ac", str(channels), str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.mark.parametrize(
    "name,rate,channels",
    [("a.mp3", 44100, 2), ("b.wav", 48000, 2), ("c.flac", 22050, 1), ("d.ogg", 48000, 2)],
)
def test_convert_any_input_to_16k_mono_int16(tmp_path, name, rate, channels):
    src = _ffmpeg_tone(tmp_path / name, rate, channels)
    out = audio.convert_to_wav16k(src, tmp_path / "out.wav")
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(audio.duration_s(out) - 1.0) < 0.06
    samples = audio.read_wav(out)
    assert audio.rms_dbfs(samples) > -30  # the tone survived (lavfi sine is -18 dBFS peak)
    assert not list(tmp_path.glob(".*part*"))  # no temp files left


def test_short_file_converts(tmp_path):
    src = _ffmpeg_tone(tmp_path / "short.wav", 48000, 2, seconds=0.1)
    out = audio.convert_to_wav16k(src, tmp_path / "out.wav")
    assert abs(audio.duration_s(out) - 0.1) < 0.01
    assert audio.melspectrogram(audio.read_wav(out)).shape[0] == 80


@pytest.mark.parametrize(
    "content,needle",
    [(b"", "empty"), (b"this is not audio at all" * 10, "not a readable audio")],
)
def test_bad_audio_is_a_clear_error_and_leaves_nothing(tmp_path, content, needle):
    src = tmp_path / "bad.mp3"
    src.write_bytes(content)
    out = tmp_path / "out.wav"
    with pytest.raises(InputError, match=needle):
        audio.convert_to_wav16k(src, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.mp3"]


def test_missing_audio(tmp_path):
    with pytest.raises(InputError, match="not found"):
        audio.convert_to_wav16k(tmp_path / "nope.wav", tmp_path / "out.wav")


def test_read_wav_refuses_wrong_rate(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(str(p), np.zeros((4800, 2), dtype=np.float32), 48000)
    with pytest.raises(InputError, match="lipbench convert"):
        audio.read_wav(p)


def test_preemphasis_equals_scipys_filter():
    from scipy.signal import lfilter

    x = np.random.default_rng(1).standard_normal(16000 * 3)
    assert np.array_equal(audio.preemphasis(x), lfilter([1.0, -0.97], [1.0], x))


def test_mel_basis_equals_librosas():
    import librosa

    want = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55.0, fmax=7600.0)
    got = audio.mel_basis()
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got, want)


def test_mel_path_does_not_import_scipy_signal():
    # scipy.signal costs ~1.2 s of start-up (librosa.filters imports it)
    code = (
        "import sys, numpy as np\n"
        "from lipbench import audio\n"
        "audio.melspectrogram(np.zeros(16000, np.float32))\n"
        "print('scipy.signal' in sys.modules, 'librosa' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "False"]
