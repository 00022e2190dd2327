"""The `ave` audio encoder: SyncTalk's audio-visual encoder, audio branch, trained SyncNet-style.

Audio branch (../shared/REFERENCE.md): a 16-mel-frame window (0.2 s of SyncTalk's log-mel, 80 mels) through a
Conv2d stack (SyncNet's audio branch shape: conv + batch norm + ReLU blocks, some residual) to a 512-d
vector. The face branch sees the mouth (5 grey lower-face crops, 0.2 s) and is only used to train
the audio branch and to score audio-video sync (engine.audio.ave_training).

Weights: this engine's `ave.safetensors` (written by `python -m engine train-ave`, both branches), or
the original's published checkpoint (a torch state dict of the audio branch, `audio_visual_encoder.pth`),
read with torch.load(weights_only=True) and its key names mapped onto this module.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import EngineError
from ..files import sha256_of
from ..models import search_dirs
from .features import MelEncoder

MEL_RATE = 80.0       # mel frames per second (hop 200 at 16 kHz)
MEL_WINDOW = 16       # 0.2 s of mel per feature
FACE_FRAMES = 5       # 0.2 s of mouth crops at 25 fps
CROP_H, CROP_W = 48, 96
WEIGHT_FILES = ("ave.safetensors", "audio_visual_encoder.pth")
FORMAT = "synctalk-ave"


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm + ReLU; residual blocks add their input before the ReLU."""

    def __init__(self, cin, cout, kernel, stride, padding, residual=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding)
        self.norm = nn.BatchNorm2d(cout)
        self.residual = residual

    def forward(self, x):
        out = self.norm(self.conv(x))
        return torch.relu(out + x if self.residual else out)


class AudioBranch(nn.Module):
    """(B, 1, 80 mels, 16 frames) -> (B, 512). Heights 80 -> 27 -> 9 -> 3 -> 1, widths 16 -> 6 -> 3 -> 1."""

    def __init__(self):
        super().__init__()
        spec = [(1, 32, 3, 1, 1, False), (32, 32, 3, 1, 1, True), (32, 32, 3, 1, 1, True),
                (32, 64, 3, (3, 1), 1, False), (64, 64, 3, 1, 1, True), (64, 64, 3, 1, 1, True),
                (64, 128, 3, 3, 1, False), (128, 128, 3, 1, 1, True), (128, 128, 3, 1, 1, True),
                (128, 256, 3, (3, 2), 1, False), (256, 256, 3, 1, 1, True),
                (256, 512, 3, 1, 0, False), (512, 512, 1, 1, 0, False)]
        self.layers = nn.Sequential(*[ConvBlock(*s) for s in spec])

    def forward(self, mel_window):
        return self.layers(mel_window).flatten(1)


class FaceBranch(nn.Module):
    """(B, 5, 48, 96) grey mouth crops -> (B, 512)."""

    def __init__(self):
        super().__init__()
        spec = [(FACE_FRAMES, 32, 5, 1, 2, False), (32, 32, 3, 1, 1, True),
                (32, 64, 3, 2, 1, False), (64, 64, 3, 1, 1, True),
                (64, 128, 3, 2, 1, False), (128, 128, 3, 1, 1, True),
                (128, 256, 3, 2, 1, False), (256, 256, 3, 1, 1, True),
                (256, 512, 3, 2, 1, False)]
        self.layers = nn.Sequential(*[ConvBlock(*s) for s in spec], nn.AdaptiveAvgPool2d(1))
        self.out = nn.Linear(512, 512)

    def forward(self, crops):
        return self.out(self.layers(crops).flatten(1))


class SyncModel(nn.Module):
    """Both branches, and the (log) temperature that scales their cosine similarity into logits."""

    def __init__(self):
        super().__init__()
        self.audio = AudioBranch()
        self.face = FaceBranch()
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))

    def similarity(self, mel_windows, crops):
        a = nn.functional.normalize(self.audio(mel_windows), dim=1)
        v = nn.functional.normalize(self.face(crops), dim=1)
        return (a * v).sum(1)


def mel_windows(mel: np.ndarray, centres_s: np.ndarray) -> np.ndarray:
    """(N, 1, 80, 16) mel windows centred at the given times; edges repeat the first/last frame."""
    starts = np.round(np.asarray(centres_s) * MEL_RATE).astype(np.int64) - MEL_WINDOW // 2
    index = np.clip(starts[:, None] + np.arange(MEL_WINDOW)[None, :], 0, len(mel) - 1)
    return np.ascontiguousarray(mel[index].transpose(0, 2, 1)[:, None], dtype=np.float32)


class AveEncoder:
    """The AudioEncoder protocol over the audio branch: 512-d features, 25 per second (as SyncTalk's)."""

    name = "ave"
    dim = 512
    rate = 25.0
    block = 30 * 16000
    context = 3200  # the 0.2 s mel window and its FFT; a whole number of features (640) and mel hops (200)

    def __init__(self, audio: AudioBranch, source: Path | None = None):
        self.audio = audio.eval()
        self.source = source
        self._mel = MelEncoder()
        self.key = f"ave-{sha256_of(source)[:12]}" if source is not None else "ave"

    @classmethod
    def find(cls, models_dir=None) -> "AveEncoder":
        """From $SYNCTALK_AVE, or ave.safetensors / audio_visual_encoder.pth in the models folders."""
        if os.environ.get("SYNCTALK_AVE"):
            chosen = Path(os.environ["SYNCTALK_AVE"])
            if not chosen.is_file():
                raise EngineError(f"{chosen}: SYNCTALK_AVE names a file that does not exist",
                                  "point it at the ave.safetensors written by train-ave", path=str(chosen))
            return cls.load(chosen)
        candidates = [folder / name for folder in search_dirs(models_dir) for name in WEIGHT_FILES]
        for path in candidates:
            if path.is_file():
                return cls.load(path)
        raise EngineError(
            "no weights for the 'ave' audio encoder (looked for " + ", ".join(str(c) for c in candidates) + ")",
            "train them with `python -m engine train-ave SUBJECT... -o ave.safetensors` and put the file in the "
            "models folder (or set SYNCTALK_AVE to it), or choose the 'whisper' encoder")

    @classmethod
    def load(cls, path: str | Path) -> "AveEncoder":
        path = Path(path)
        audio = AudioBranch()
        state = load_audio_state(path)
        try:
            audio.load_state_dict(state)
        except RuntimeError as exc:
            raise EngineError(f"{path}: the weights do not fit the audio-visual encoder ({str(exc)[:200]})",
                              "use ave.safetensors from train-ave or SyncTalk's audio_visual_encoder.pth",
                              path=str(path)) from exc
        return cls(audio, path)

    def encode(self, samples: np.ndarray) -> np.ndarray:
        mel = self._mel.encode(samples)
        n = self.n_features(len(samples))
        windows = mel_windows(mel, (np.arange(n) + 0.5) / self.rate)
        with torch.inference_mode():
            return torch.cat([self.audio(torch.from_numpy(windows[i:i + 256]))
                              for i in range(0, n, 256)]).numpy()


    def n_features(self, n_samples: int) -> int:
        return max(1, int(np.floor(n_samples / 16000 * self.rate)))


def load_audio_state(path: Path) -> dict:
    """The audio branch's state dict from our safetensors or from the original's .pth (keys mapped)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for a foreign file
            raise EngineError(f"{path}: not a safetensors file ({exc})", "train-ave again", path=str(path)) from exc
        return {k[len("audio."):]: v for k, v in tensors.items() if k.startswith("audio.")}
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors of several types
        raise EngineError(f"{path}: cannot read as a torch state dict ({exc})",
                          "use the original's audio_visual_encoder.pth", path=str(path)) from exc
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    return map_original_keys(raw)


_ORIGINAL_KEY = re.compile(r"^(?:module\.)?(?:audio_encoder\.)?(\d+)\.conv_block\.([01])\.(.+)$")


def map_original_keys(state: dict) -> dict:
    """The original's `N.conv_block.0.weight` (conv) / `N.conv_block.1.*` (batch norm) -> `layers.N.conv|norm.*`."""
    mapped = {}
    for key, value in state.items():
        m = _ORIGINAL_KEY.match(key)
        if m:
            mapped[f"layers.{m.group(1)}.{'conv' if m.group(2) == '0' else 'norm'}.{m.group(3)}"] = value
    return mapped
