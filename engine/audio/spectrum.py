"""Short-time Fourier transform and mel filter banks, in numpy: what every audio feature here is built on.

librosa's `stft`, `fft_frequencies` and `filters.mel` (Slaney's mel scale and area normalisation, its
defaults) computed the same values; importing librosa took 1.3-2.6 s of every command that touched
speech (a render of 100 frames spent a twentieth of its time on it) and brought numba and
scikit-learn into the extension's wheels. tests/test_speech_features.py checks these against
torch.stft and against the mel scale's definition.
"""
from __future__ import annotations

import numpy as np


def hann(n: int) -> np.ndarray:
    """The periodic Hann window of length n (the one spectral analysis uses: it tiles at hop n/2)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def stft(samples: np.ndarray, n_fft: int, hop: int, pad_mode: str = "constant") -> np.ndarray:
    """(1 + n_fft // 2, 1 + len // hop) complex64: frames centred on multiples of `hop`, Hann-windowed.

    The signal is padded by n_fft // 2 on each side, with zeros ("constant") or its mirror ("reflect")."""
    samples = np.asarray(samples, np.float32)
    padded = np.pad(samples, n_fft // 2, mode=pad_mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * hann(n_fft), axis=1).T.astype(np.complex64)


def fft_frequencies(sample_rate: int, n_fft: int) -> np.ndarray:
    return np.fft.rfftfreq(n_fft, 1.0 / sample_rate)


# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4).
_LINEAR_HZ_PER_MEL = 200.0 / 3
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _LINEAR_HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    linear = hz / _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz >= _BREAK_HZ, logarithmic, linear)


def mel_to_hz(mel) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    linear = mel * _LINEAR_HZ_PER_MEL
    logarithmic = _BREAK_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _BREAK_MEL) - _BREAK_MEL))
    return np.where(mel >= _BREAK_MEL, logarithmic, linear)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32 triangular filters, evenly spaced in mels from fmin to fmax
    (default: Nyquist), each scaled to unit area in Hz (so a wide filter does not weigh more)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = fft_frequencies(sample_rate, n_fft)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return (triangles * (2.0 / (upper - lower))).astype(np.float32)
