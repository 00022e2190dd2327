"""The expression model: a window of audio features (+ voice activity) -> 52 ARKit weights.

A linear 1D convolution over the window (kernel = the whole window, all feature channels, one output
per blendshape) on standardised features, fitted in closed form by ridge regression
(engine.expression.training). On one subject's minute of frames this beats small MLP and conv nets
trained by gradient descent on held-out frames (they memorise: lieu_60s held-out jawOpen r 0.66 for
the best of them against 0.75 for this), fits in about a second, and is deterministic.

Saved as safetensors (float16: the model is tiny either way): the weights, the input standardisation,
the mean pose and the rest pose that silence falls back to; the metadata holds the config.
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
    encoder: str         # audio encoder name (engine.audio.features)
    dim: int             # its feature size
    window: int = 8      # frames of context (0.32 s at 25 fps) ...
    lead: int = 3        # ... centred this many frames ahead: the mouth moves before the sound comes out
    fps: float = 25.0    # frame rate it was fitted at (its curves are resampled to any fps at use)
    ridge: float = 0.0   # the regularisation it was fitted with (chosen by cross-validation)


class ExpressionNet(nn.Module):
    def __init__(self, config: ExpressionConfig):
        super().__init__()
        self.config = config
        inputs = config.window * (config.dim + 1)  # +1: voice activity, so silence is learnt, not only gated
        self.register_buffer("feature_mean", torch.zeros(config.dim + 1))
        self.register_buffer("feature_std", torch.ones(config.dim + 1))
        self.register_buffer("rest_pose", torch.zeros(N_OUT))
        self.window = nn.Linear(inputs, N_OUT)  # its bias is the mean pose

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, window, dim + 1) -> (B, 52) weights in [0, 1]."""
        z = (x - self.feature_mean) / self.feature_std
        return self.window(z.flatten(1)).clamp(0, 1)

    def standardised(self, x: np.ndarray) -> np.ndarray:
        """(N, window * (dim + 1)): what the linear layer sees, for fitting."""
        z = (x - self.feature_mean.numpy()) / self.feature_std.numpy()
        return z.reshape(len(x), -1)

    def predict(self, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """(N, 52) weights from (N, window, dim + 1) inputs."""
        with torch.inference_mode():
            out = [self(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, N_OUT), np.float32)

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        from ..files import atomic_write_tensors
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().numpy().astype(np.float16) for k, v in self.state_dict().items()}
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
                state = {k: f.get_tensor(k).float() for k in f.keys()}
        except Exception as exc:  # safetensors raises several types for a foreign file
            raise EngineError(f"{path}: not an expression model ({exc})", "train the subject again",
                              path=str(path)) from exc
        if meta.get("format") != FORMAT:
            raise EngineError(f"{path}: not an expression model", "train the subject again", path=str(path))
        model = cls(ExpressionConfig(**json.loads(meta["config"])))
        model.load_state_dict(state)
        model.metadata = meta
        return model.eval()
