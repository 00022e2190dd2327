"""One interface for audio encoders, and their alignment to video frames.

An encoder turns 16 kHz mono samples into features at its own rate (`encode`); `frame_features`
brings them to any video frame rate (25, 24, 30, 29.97) by sampling at each frame's centre, and
`windows` gathers the context the NeRF's audio attention looks at.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import EngineError
from ..media.audio import SAMPLE_RATE


class AudioEncoder(Protocol):
    name: str
    dim: int     # feature size
    rate: float  # features per second

    def encode(self, samples: np.ndarray) -> np.ndarray:
        """(T, dim) float32 at `rate` per second, from 16 kHz mono float32 samples."""


class MelEncoder:
    """The log-mel baseline, with SyncTalk's parameters (80 mels, 80 frames/s, values in [-4, 4])."""

    name = "mel"
    dim = 80
    rate = SAMPLE_RATE / 200

    def encode(self, samples: np.ndarray) -> np.ndarray:
        import librosa
        emphasised = np.append(samples[0], samples[1:] - 0.97 * samples[:-1])
        spec = np.abs(librosa.stft(emphasised, n_fft=800, hop_length=200, win_length=800))
        mel = librosa.feature.melspectrogram(S=spec, sr=SAMPLE_RATE, n_mels=80, fmin=55, fmax=7600)
        db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
        normalised = np.clip(8 * (db + 100) / 100 - 4, -4, 4)
        return normalised.T.astype(np.float32)


def encoder_names() -> list[str]:
    return list(_ENCODERS)


def get_encoder(name: str, models_dir=None) -> AudioEncoder:
    if name not in _ENCODERS:
        raise EngineError(f"unknown audio encoder '{name}'", f"choose one of {', '.join(_ENCODERS)}")
    return _ENCODERS[name](models_dir)


def _whisper(models_dir):
    from .whisper import WhisperEncoder
    return WhisperEncoder(models_dir)


def _ave(models_dir):
    from .ave import AveEncoder
    return AveEncoder.find(models_dir)


# The first is the default: chosen by scripts/bench_audio.py (held-out jawOpen correlation on lieu_60s).
_ENCODERS = {
    "whisper": _whisper,
    "ave": _ave,
    "mel": lambda models_dir: MelEncoder(),
}
DEFAULT_ENCODER = "whisper"


def frame_features(features: np.ndarray, rate: float, fps: float, n_frames: int | None = None) -> np.ndarray:
    """(n_frames, dim): features linearly interpolated at the centre of each video frame."""
    if n_frames is None:
        n_frames = int(np.floor(len(features) / rate * fps))
    centres = (np.arange(n_frames) + 0.5) / fps * rate - 0.5
    centres = np.clip(centres, 0, len(features) - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, len(features) - 1)
    t = (centres - low)[:, None].astype(np.float32)
    return (features[low] * (1 - t) + features[high] * t).astype(np.float32)


def windows(per_frame: np.ndarray, size: int = 8) -> np.ndarray:
    """(n_frames, size, dim): for each frame, the `size` frames around it, edges repeated."""
    n = len(per_frame)
    offsets = np.arange(size) - size // 2
    index = np.clip(np.arange(n)[:, None] + offsets[None, :], 0, n - 1)
    return per_frame[index]
