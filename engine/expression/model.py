"""The expression models: audio features (+ voice activity) per frame -> 52 ARKit weights.

Two architectures share one file format and one interface (`frame_weights`, `rest_pose`, `config`):

`ExpressionNet` (arch "linear", each subject's own model): a linear 1D convolution over the window
(kernel = the whole window, all feature channels, one output per blendshape) on standardised features,
fitted in closed form by ridge regression (engine.expression.training). On one subject's minute of
frames this beats small MLP and conv nets trained by gradient descent on held-out frames (they
memorise: lieu_60s held-out jawOpen r 0.66 for the best of them against 0.75 for this), fits in about
a second, and is deterministic. A subject's model can carry a prior: a copy of the generic model, whose
52 weights per frame it reads beside its encoder's features (engine.expression.training says why). The
copy lives in the subject's model file, so a later generic model does not change a trained subject.

`TemporalNet` (arch "temporal", the generic model, engine.expression.generic): a small stack of dilated
1D convolutions over the whole feature sequence (about 0.6 s of context, ~100k parameters), trained by
gradient descent on many speakers with per-speaker normalised targets; its output is mapped to ARKit
capture ranges by a piecewise linear map per curve.

Saved as safetensors (float16: the models are tiny either way): the weights, the input standardisation,
the rest pose that silence falls back to (and the temporal model's output calibration); the metadata
holds the config. `load_model` reads either.
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
    arch: str = "linear"  # "linear" (ExpressionNet) or "temporal" (TemporalNet)
    width: int = 64       # temporal: channels of the hidden layers
    prior: dict | None = None  # linear: the config of the generic model whose weights it also reads
    prior_gain: float = 0.0    # linear: how much the prior's columns were weighted up in the fit (0: left out)
    prior_lag: int = 0         # linear: frames the subject's face trails the prior's output (its clip's offset)

    @property
    def inputs_per_frame(self) -> int:
        """Features per frame: the encoder's, the prior's 52 weights if there is one, voice activity."""
        return self.dim + (N_OUT if self.prior else 0) + 1


class ExpressionNet(nn.Module):
    # It learnt the person's pauses: its silence gate holds this long into one (engine.expression.predict).
    pause_hold_s = 0.5

    def __init__(self, config: ExpressionConfig):
        super().__init__()
        self.config = config
        # voice activity is an input, so that silence is learnt, not only gated
        self.register_buffer("feature_mean", torch.zeros(config.inputs_per_frame))
        self.register_buffer("feature_std", torch.ones(config.inputs_per_frame))
        self.register_buffer("rest_pose", torch.zeros(N_OUT))
        self.window = nn.Linear(config.window * config.inputs_per_frame, N_OUT)  # its bias is the mean pose
        self.prior = TemporalNet(ExpressionConfig(**config.prior)) if config.prior else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, window, inputs_per_frame) -> (B, 52) weights in [0, 1]."""
        z = (x - self.feature_mean) / self.feature_std
        return self.window(z.flatten(1)).clamp(0, 1)

    @property
    def context(self) -> tuple[int, int]:
        """Frames before and after a frame that its weights depend on (predict.predict_speech works in
        blocks that carry this much context, so a block's weights equal the whole sequence's)."""
        window, lead = self.config.window, self.config.lead
        return window // 2, window - 1 - window // 2 + lead

    def frame_weights(self, per_frame: np.ndarray) -> np.ndarray:
        """(n_frames, 52) weights from per-frame inputs (n_frames, inputs_per_frame) (engine.expression.predict)."""
        from .predict import model_windows
        return self.predict(model_windows(per_frame, self.config.window, self.config.lead))

    def standardised(self, x: np.ndarray) -> np.ndarray:
        """(N, window * inputs_per_frame): what the linear layer sees, for fitting."""
        z = (x - self.feature_mean.numpy()) / self.feature_std.numpy()
        return z.reshape(len(x), -1)

    def predict(self, x: np.ndarray, batch: int = 2048) -> np.ndarray:
        """(N, 52) weights from (N, window, inputs_per_frame) inputs."""
        with torch.inference_mode():
            out = [self(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, N_OUT), np.float32)

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        return save_model(self, path, extra)

    @classmethod
    def load(cls, path: str | Path) -> "ExpressionNet":
        model = load_model(path)
        if not isinstance(model, cls):
            raise EngineError(f"{path}: a {model.config.arch} expression model, not a subject's",
                              "train the subject again", path=str(path))
        return model


class TemporalNet(nn.Module):
    """Dilated 1D convolutions over the feature sequence -> per-speaker normalised weights -> ARKit weights."""

    _DILATIONS = (1, 2, 4)
    _KERNEL = 5
    _KNOTS = 17  # points of the output map per curve (engine.expression.generic._KNOTS)
    _INPUT_DROPOUT = 0.7
    _HIDDEN_DROPOUT = 0.3
    pause_hold_s = 0.0  # any voice: the mouth rests as soon as a pause starts (engine.expression.predict)

    def __init__(self, config: ExpressionConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.register_buffer("feature_mean", torch.zeros(config.dim + 1))
        self.register_buffer("feature_std", torch.ones(config.dim + 1))
        self.register_buffer("rest_pose", torch.zeros(N_OUT))
        # ARKit weight = the normalised weight through a piecewise linear map per curve (set by calibration)
        self.register_buffer("output_knots_in", torch.zeros(N_OUT, self._KNOTS))
        self.register_buffer("output_knots_out", torch.zeros(N_OUT, self._KNOTS))
        self.project = nn.Conv1d(config.dim + 1, width, 1)
        self.blocks = nn.ModuleList(
            nn.Conv1d(width, width, self._KERNEL, dilation=d, padding=d * (self._KERNEL - 1) // 2,
                      padding_mode="replicate")
            for d in self._DILATIONS)
        self.head = nn.Conv1d(width, N_OUT, 1)
        # Heavy dropout: on a few dozen speakers the network otherwise learns the speakers, not speech
        # (cross-validated jawOpen r 0.34 with 0.1 on the inputs only, 0.40 with these).
        self.input_dropout = nn.Dropout(self._INPUT_DROPOUT)
        self.hidden_dropout = nn.Dropout(self._HIDDEN_DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, dim + 1) -> (B, T, 52) per-speaker normalised weights (0: the speaker's rest, 1: wide)."""
        z = ((x - self.feature_mean) / self.feature_std).transpose(1, 2)
        h = nn.functional.gelu(self.project(self.input_dropout(z)))
        for block in self.blocks:
            h = h + nn.functional.gelu(block(self.hidden_dropout(h)))
        return self.head(self.hidden_dropout(h)).transpose(1, 2)

    @property
    def context(self) -> tuple[int, int]:
        """Frames before and after a frame that its weights depend on: the dilated kernels' reach."""
        reach = sum(d * (self._KERNEL - 1) // 2 for d in self._DILATIONS)
        return reach, reach

    def normalised(self, per_frame: np.ndarray) -> np.ndarray:
        """(n_frames, 52) per-speaker normalised weights (the output before the map) from (n_frames, dim + 1)."""
        with torch.inference_mode():
            return self(torch.from_numpy(np.ascontiguousarray(per_frame, np.float32))[None])[0].numpy()

    def frame_weights(self, per_frame: np.ndarray) -> np.ndarray:
        """(n_frames, 52) ARKit weights in [0, 1] from per-frame inputs (n_frames, dim + 1)."""
        normalised = self.normalised(per_frame)
        knots_in, knots_out = self.output_knots_in.numpy(), self.output_knots_out.numpy()
        return np.stack([np.interp(normalised[:, c], knots_in[c], knots_out[c]) for c in range(N_OUT)],
                        axis=1).astype(np.float32)

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        return save_model(self, path, extra)


def save_model(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    from ..files import atomic_write_tensors
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(asdict(model.config)), **(extra or {})}
    atomic_write_tensors(path, tensors, meta)
    return path


def load_model(path: str | Path) -> ExpressionNet | TemporalNet:
    """An expression model of either architecture, as its file says."""
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
        if meta.get("format") != FORMAT:
            raise ValueError("no expression-model header")
        config = ExpressionConfig(**json.loads(meta["config"]))
        model = {"linear": ExpressionNet, "temporal": TemporalNet}[config.arch](config)
        model.load_state_dict(state)
    except Exception as exc:  # safetensors, json and torch raise several types for a foreign file
        raise EngineError(f"{path}: not an expression model ({exc})",
                          "train the subject again, or retrain the model with `python -m engine train-generic`",
                          path=str(path)) from exc
    model.metadata = meta
    return model.eval()
