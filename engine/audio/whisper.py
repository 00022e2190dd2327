"""The Whisper audio encoders: Whisper base's encoder (multilingual).

`whisper`: the encoder's output, run by CTranslate2 (int8, fast): the NeRF's default conditioning.
`whisper-mid`: the features after the first MID_LAYERS of its 6 layers, run in torch from the same weights
(engine.audio.ct2_weights). Speech models keep more of how a sound is made in their middle layers and
more of what was said in their last; on unseen speakers the generic expression model predicts the jaw
better from the middle (speaker-disjoint cross-validation over the corpus, raw jawOpen r: 0.483 after
2 layers, 0.487 after 3, 0.474 after 4, 0.448 after 5, 0.447 from the output).

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
ENCODER_LAYERS = 6             # Whisper base
MID_LAYERS = 3                 # the `whisper-mid` features: after the 3rd layer
BATCH_WINDOWS = 2              # windows encoded together: 1 minute, a few MB


def whisper_log_mel(samples: np.ndarray) -> np.ndarray:
    """(80, T) log-mel exactly as Whisper computes it (its `log_mel_spectrogram`), T = len/160."""
    spec = stft(samples, N_FFT, HOP, pad_mode="reflect")[:, :-1]
    filters = mel_filters(SAMPLE_RATE, N_FFT, N_MELS)
    log_spec = np.log10(np.maximum(filters @ (np.abs(spec) ** 2), 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


class _WhisperWindows:
    """Whisper's framing: 30-s windows of log-mel in, 512-d features at 50 per second out. Each encoder's
    `_encode_mels` turns (windows, 80, 3000) log-mel into (windows, 1500, 512) features."""

    dim = 512
    rate = 50.0
    block = BATCH_WINDOWS * WINDOW_SAMPLES
    context = 0

    def encode(self, samples: np.ndarray) -> np.ndarray:
        n_windows = max(1, int(np.ceil(len(samples) / WINDOW_SAMPLES)))
        features = []
        for first in range(0, n_windows, BATCH_WINDOWS):
            last = min(first + BATCH_WINDOWS, n_windows)
            batch = np.stack([self._window_mel(samples, w) for w in range(first, last)])
            features.append(self._encode_mels(batch).reshape(-1, self.dim))
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


class WhisperEncoder(_WhisperWindows):
    """The encoder's output, run by CTranslate2."""

    name = "whisper"
    key = "whisper-base"

    def __init__(self, models_dir=None, threads: int | None = None):
        import ctranslate2
        self.model_path = find_model("whisper-base", models_dir)
        threads = threads or min(4, os.cpu_count() or 1)
        self._model = ctranslate2.models.Whisper(str(self.model_path), device="cpu", compute_type="int8",
                                                 intra_threads=threads)

    def _encode_mels(self, mels: np.ndarray) -> np.ndarray:
        import ctranslate2
        return np.asarray(self._model.encode(ctranslate2.StorageView.from_array(mels), to_cpu=True), np.float32)


class WhisperLayerEncoder(_WhisperWindows):
    """The features after the encoder's first `layers` layers (pre-norm transformer blocks), in torch."""

    name = "whisper-mid"

    def __init__(self, models_dir=None, layers: int = MID_LAYERS):
        from .ct2_weights import read_tensors
        import torch
        self.model_path = find_model("whisper-base", models_dir)
        self.layers = layers
        self.key = f"whisper-base-layer{layers}"
        weights = read_tensors(self.model_path / "model.bin", "encoder/")
        self._heads = int(weights.pop("encoder/num_heads"))
        self._w = {k: torch.from_numpy(v) for k, v in weights.items()}

    def _encode_mels(self, mels: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn.functional import conv1d, gelu, layer_norm, linear, scaled_dot_product_attention
        w, heads = self._w, self._heads
        with torch.inference_mode():
            x = gelu(conv1d(torch.from_numpy(mels), w["encoder/conv1/weight"], w["encoder/conv1/bias"], padding=1))
            x = gelu(conv1d(x, w["encoder/conv2/weight"], w["encoder/conv2/bias"], stride=2, padding=1))
            x = x.transpose(1, 2) + w["encoder/position_encodings/encodings"]
            batch, length, dim = x.shape
            for i in range(self.layers):
                p = f"encoder/layer_{i}/"
                h = layer_norm(x, (dim,), w[p + "self_attention/layer_norm/gamma"],
                               w[p + "self_attention/layer_norm/beta"])
                qkv = linear(h, w[p + "self_attention/linear_0/weight"], w[p + "self_attention/linear_0/bias"])
                q, k, v = qkv.view(batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
                attended = scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim)
                x = x + linear(attended, w[p + "self_attention/linear_1/weight"], w[p + "self_attention/linear_1/bias"])
                h = layer_norm(x, (dim,), w[p + "ffn/layer_norm/gamma"], w[p + "ffn/layer_norm/beta"])
                x = x + linear(gelu(linear(h, w[p + "ffn/linear_0/weight"], w[p + "ffn/linear_0/bias"])),
                               w[p + "ffn/linear_1/weight"], w[p + "ffn/linear_1/bias"])
            if self.layers == ENCODER_LAYERS:  # the whole encoder: its final norm, as CTranslate2 gives it
                x = layer_norm(x, (dim,), w["encoder/layer_norm/gamma"], w["encoder/layer_norm/beta"])
        return x.numpy()
