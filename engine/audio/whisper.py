"""The `whisper` audio encoder: Whisper base's encoder (multilingual), run by CTranslate2.

Whisper looks at 30 s windows of log-mel (80 mels, 100 frames/s) and gives 1500 x 512 features per
window (50 per second). Longer audio is cut into consecutive 30 s windows, each a log-mel of its own
(as Whisper was trained on them), encoded a few at a time; the features of the zero padding after the
end of the speech are dropped. A window depends on nothing outside it, so any stretch of a long file
is encoded on its own (engine.audio.features) with the features the whole file would give.
"""
from __future__ import annotations

import os

import numpy as np

from ..media.audio import SAMPLE_RATE
from ..models import find_model
from .spectrum import mel_filters, stft

N_FFT = 400
HOP = 160                      # 100 mel frames per second
N_MELS = 80
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
WINDOW_MEL_FRAMES = WINDOW_SAMPLES // HOP   # 3000
FEATURES_PER_WINDOW = WINDOW_MEL_FRAMES // 2  # the encoder's stride-2 convolution: 1500
BATCH_WINDOWS = 2              # windows encoded together: 1 minute, a few MB


def whisper_log_mel(samples: np.ndarray) -> np.ndarray:
    """(80, T) log-mel exactly as Whisper computes it (its `log_mel_spectrogram`), T = len/160."""
    spec = stft(samples, N_FFT, HOP, pad_mode="reflect")[:, :-1]
    filters = mel_filters(SAMPLE_RATE, N_FFT, N_MELS)
    log_spec = np.log10(np.maximum(filters @ (np.abs(spec) ** 2), 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


class WhisperEncoder:
    """Whisper base's encoder: 512-d features, 50 per second."""

    name = "whisper"
    key = "whisper-base"
    dim = 512
    rate = 50.0
    block = BATCH_WINDOWS * WINDOW_SAMPLES
    context = 0

    def __init__(self, models_dir=None, threads: int | None = None):
        import ctranslate2
        self.model_path = find_model("whisper-base", models_dir)
        threads = threads or min(4, os.cpu_count() or 1)
        self._model = ctranslate2.models.Whisper(str(self.model_path), device="cpu", compute_type="int8",
                                                 intra_threads=threads)

    def encode(self, samples: np.ndarray) -> np.ndarray:
        import ctranslate2
        n_windows = max(1, int(np.ceil(len(samples) / WINDOW_SAMPLES)))
        features = []
        for first in range(0, n_windows, BATCH_WINDOWS):
            last = min(first + BATCH_WINDOWS, n_windows)
            batch = np.stack([self._window_mel(samples, w) for w in range(first, last)])
            output = self._model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True)
            features.append(np.asarray(output, np.float32).reshape(-1, self.dim))
        return np.concatenate(features)[:self.n_features(len(samples))]

    def n_features(self, n_samples: int) -> int:
        return int(np.ceil(n_samples / SAMPLE_RATE * self.rate))

    @staticmethod
    def _window_mel(samples: np.ndarray, w: int) -> np.ndarray:
        """(80, 3000) log-mel of window w, zero-padded to 30 s as Whisper pads."""
        window = np.zeros(WINDOW_SAMPLES, np.float32)
        part = samples[w * WINDOW_SAMPLES: (w + 1) * WINDOW_SAMPLES]
        window[:len(part)] = part
        return whisper_log_mel(window)
