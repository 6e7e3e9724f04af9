"""Audio front end: any input → 16 kHz mono int16 WAV, durations, and the Wav2Lip mel
spectrogram exactly as the reference model was trained with (see docs in README)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_path
from .errors import InputError, MediaError
from .ffmpeg import run_ffmpeg
from .video import probe

SAMPLE_RATE = 16000
# Wav2Lip's hparams: n_fft = win = 800, hop = 200 (80 mel frames per second at 16 kHz).
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP
# A file that decodes to less than this share of its declared duration is called truncated.
TRUNCATED_SHARE = 0.9


def convert_to_wav16k(src: str | os.PathLike, dst: str | os.PathLike, ffmpeg: str = "auto") -> Path:
    """Decode any audio ffmpeg reads (mp3, wav, flac, ogg, any rate, stereo) into a 16 kHz
    mono int16 WAV at ``dst``, atomically. Refuses, with one clear line, a file with no audio
    stream, non-finite samples (NaN/Inf), or one that decodes much shorter than it declares
    (a truncated download)."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"audio file not found: {src}", "check the path")
    if src.stat().st_size == 0:
        raise InputError(
            f"audio file is empty (0 bytes): {src}", "synthesize or record the audio again"
        )
    try:
        info = probe(src, ffmpeg)
    except MediaError as exc:
        raise InputError(exc.problem, exc.fix) from exc
    if not info.has_audio:
        raise InputError(
            f"{src} has no audio stream",
            "pass an audio file (wav, mp3, flac, ogg) or a video with sound",
        )
    with atomic_path(dst) as tmp:
        decoded = tmp.with_name(tmp.name + ".f32.wav")
        try:
            # float32 first, so non-finite samples can be seen (int16 would turn NaN into −32768)
            run_ffmpeg(["-i", src, "-vn", "-ac", "1", "-ar", SAMPLE_RATE, "-c:a", "pcm_f32le",
                        "-f", "wav", decoded], what=f"converting {src}", setting=ffmpeg)  # fmt: skip
            samples, _ = sf.read(str(decoded), dtype="float32", always_2d=False)
        except MediaError as exc:
            raise InputError(exc.problem, exc.fix) from exc
        finally:
            decoded.unlink(missing_ok=True)
        check_samples(samples, src, info.duration_s)
        # ffmpeg's own float → s16 conversion (lrintf(x · 2¹⁵), clipped), so bits are unchanged
        pcm = np.clip(np.rint(samples.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
        sf.write(str(tmp), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return dst


def check_samples(samples: np.ndarray, src: Path, declared_s: float | None) -> None:
    if len(samples) == 0:
        raise InputError(f"audio file has no samples: {src}", "pass a file that contains sound")
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    if bad:
        raise InputError(
            f"{src} has {bad} non-finite samples (NaN or ±Inf) of {len(samples)}",
            "re-export the audio from its source (a float WAV with broken samples)",
        )
    got = len(samples) / SAMPLE_RATE
    if declared_s and got < TRUNCATED_SHARE * declared_s - 0.05:
        raise InputError(
            f"{src} declares {declared_s:.2f} s but only {got:.2f} s of it decodes (truncated?)",
            "download or export the file again",
        )


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """A 16 kHz mono WAV → float32 samples in [-1, 1]."""
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InputError(
            f"cannot read WAV {path}: {exc}", "convert it first with `lipbench convert`"
        ) from exc
    if samples.ndim != 1 or sr != SAMPLE_RATE:
        raise InputError(
            f"{path} is not 16 kHz mono (rate {sr}, shape {samples.shape})",
            "convert it first with `lipbench convert`",
        )
    return samples


def duration_s(path: str | os.PathLike) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def write_wav16k(path: str | os.PathLike, samples: np.ndarray) -> Path:
    """Write float samples as a 16 kHz mono int16 WAV, atomically."""
    with atomic_path(path) as tmp:
        sf.write(
            str(tmp),
            np.asarray(samples, dtype=np.float32),
            SAMPLE_RATE,
            subtype="PCM_16",
            format="WAV",
        )
    return Path(path)


# Slaney mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f: float) -> float:
    if f >= _MIN_LOG_HZ:
        return _MIN_LOG_MEL + np.log(f / _MIN_LOG_HZ) / _LOGSTEP
    return f / _F_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    hz[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    return hz


@functools.cache
def mel_basis() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) (Slaney scale
    and norm, float32), the same operations in the same order, so bit-identical (tested).
    Written out because importing librosa.filters imports scipy.signal: ~1.2 s of start-up."""
    fftfreqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((N_MELS, 1 + N_FFT // 2), dtype=np.float32)
    for i in range(N_MELS):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : N_MELS + 2] - mel_f[:N_MELS]))[:, np.newaxis]
    return weights


def stft_magnitude(y: np.ndarray) -> np.ndarray:
    """|STFT| with centred frames and reflect padding, Hann window (n_fft = win = 800, hop 200).

    Written with numpy rather than librosa.stft: identical maths, and it keeps librosa's numba
    start-up cost off the hot path. Frame count is 1 + len(y) // hop."""
    pad = N_FFT // 2
    mode = "reflect" if len(y) > pad else "constant"  # reflect needs more samples than the pad
    padded = np.pad(y.astype(np.float64, copy=False), pad, mode=mode)
    n_frames = 1 + len(y) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    window = np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as scipy/librosa use for STFT
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def preemphasis(x: np.ndarray) -> np.ndarray:
    """y[n] = x[n] − 0.97·x[n−1] (the FIR that scipy.signal.lfilter([1, −0.97], [1]) applies;
    written out so start-up does not import scipy.signal, ~1 s)."""
    y = np.empty_like(x)
    y[:1] = x[:1]
    y[1:] = x[1:] - PREEMPHASIS * x[:-1]
    return y


def melspectrogram(samples: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised log-mel: 80 × (1 + len // 200) float32 in [-4, 4]."""
    y = preemphasis(np.asarray(samples, dtype=np.float64))
    mel = mel_basis() @ stft_magnitude(y)
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))  # 1e-5
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    norm = 2 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def rms_dbfs(samples: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return 20 * np.log10(max(rms, 1e-10))
