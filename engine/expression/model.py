"""The expression model: a window of audio features (+ voice activity) -> 52 ARKit weights.

Small on purpose (tens of thousands of parameters): it learns from one subject's minute or so of
frames, so it must train in seconds on a CPU and not memorise. Each frame of the window is
projected to a small code, a 1D convolution mixes the codes over time, and a linear head gives
the 52 weights in units of each weight's spread on the training frames (so a small but lively
curve like jawOpen counts as much as a large one), brought back to [0, 1] at the end.

Saved as safetensors: the weights, the input normalisation, and the rest pose that silence falls
back to; the metadata names the encoder, window and sizes, so a saved model rebuilds itself.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..arkit import ARKIT_NAMES
from ..errors import EngineError

FORMAT = "synctalk-expression"
N_OUT = len(ARKIT_NAMES)


@dataclass
class ExpressionConfig:
    encoder: str        # audio encoder name (engine.audio.features)
    dim: int            # its feature size
    window: int = 6     # frames of context (0.24 s at 25 fps) ...
    lead: int = 2       # ... centred this many frames ahead: the mouth moves before the sound comes out
    hidden: int = 8
    dropout: float = 0.5  # on the input features: the model must not lean on a few feature channels
    fps: float = 25.0   # frame rate it was trained at (features are resampled to any fps at use)


class ExpressionNet(nn.Module):
    def __init__(self, config: ExpressionConfig):
        super().__init__()
        self.config = config
        c = config
        # +1 input channel: voice activity, so silence is learnt, not only gated afterwards.
        self.register_buffer("feature_mean", torch.zeros(c.dim + 1))
        self.register_buffer("feature_std", torch.ones(c.dim + 1))
        self.register_buffer("target_mean", torch.zeros(N_OUT))
        self.register_buffer("target_std", torch.ones(N_OUT))
        self.register_buffer("rest_pose", torch.zeros(N_OUT))
        self.project = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(c.dim + 1, c.hidden), nn.GELU())
        self.temporal = nn.Sequential(nn.Conv1d(c.hidden, c.hidden, 3, padding=1), nn.GELU(),
                                      nn.Conv1d(c.hidden, c.hidden, 3, padding=1), nn.GELU())
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(c.hidden * c.window, N_OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, window, dim + 1) -> (B, 52) standardised weights (see `weights`)."""
        code = self.project((x - self.feature_mean) / self.feature_std)
        code = self.temporal(code.transpose(1, 2))
        return self.head(code.flatten(1))

    def weights(self, standardised: torch.Tensor) -> torch.Tensor:
        return (self.target_mean + self.target_std * standardised).clamp(0, 1)

    def predict(self, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """(N, 52) weights in [0, 1] from (N, window, dim + 1) inputs."""
        self.eval()
        with torch.inference_mode():
            out = [self.weights(self(torch.from_numpy(x[i:i + batch]))) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, N_OUT), np.float32)

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        from ..subject.format import atomic_write_tensors
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().numpy() for k, v in self.state_dict().items()}
        meta = {"format": FORMAT, "config": json.dumps(asdict(self.config)), **(extra or {})}
        atomic_write_tensors(path, tensors, meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ExpressionNet":
        from safetensors import safe_open
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"{path}: expression model not found",
                              "train the subject (`python -m engine train SUBJECT`) or use --generic",
                              path=str(path))
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for a foreign file
            raise EngineError(f"{path}: not an expression model ({exc})", "train the subject again",
                              path=str(path)) from exc
        if meta.get("format") != FORMAT:
            raise EngineError(f"{path}: not an expression model", "train the subject again", path=str(path))
        model = cls(ExpressionConfig(**json.loads(meta["config"])))
        model.load_state_dict(state)
        model.metadata = meta
        return model.eval()
