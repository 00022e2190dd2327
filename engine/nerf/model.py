"""The talking head's modules: field, occupancy grid and torso, with the conditioning's normalisation.

SUBJECT/model/head.safetensors holds their weights (the occupancy grid included), SUBJECT/model/head.json
the HeadConfig they are built from (engine/nerf/config.py). Rendering frames is talking_head.py's.
"""
from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from ..arkit import ARKIT_NAMES, MOUTH_AND_JAW
from .config import HeadConfig
from .field import HeadField
from .raymarch import OccupancyGrid, Rays, render_rays
from .torso import TorsoNet


class HeadModel(nn.Module):
    """Field + occupancy grid + torso, with the audio feature normalisation measured on the training clip.

    `use_tcnn`: tiny-cuda-nn's grid instead of the PyTorch one (same weights, encoding.py); the trainer
    passes config.use_tcnn, rendering the PyTorch grid.
    """

    def __init__(self, config: HeadConfig, use_tcnn: bool = False):
        super().__init__()
        self.config = config
        self.field = HeadField(audio_dim=config.audio_dim, n_latents=config.n_latents,
                               expression_dim=len(config.expression_indices),
                               audio_window=config.audio_window, encoding=asdict(config.encoding),
                               mouth_outputs=len(config.audio_supervision), use_tcnn=use_tcnn)
        self.grid = OccupancyGrid(list(config.box_lo), list(config.box_hi), config.grid_resolution)
        self.torso = TorsoNet(config.n_latents, config.size)
        self.register_buffer("audio_mean", torch.zeros(config.audio_dim))
        self.register_buffer("audio_std", torch.ones(config.audio_dim))
        # Blendshapes enter standardised over the training clip: MediaPipe's jawOpen of a speaker may
        # span 0-0.2 and a blink 0-0.6; raw, the small-range curves barely reach the MLP and the field
        # settles on the average mouth. (Models saved before this have identity values here.)
        n_expression = len(config.expression_indices)
        self.register_buffer("expression_mean", torch.zeros(n_expression))
        self.register_buffer("expression_std", torch.ones(n_expression))
        # ... and are held inside the range the training clip showed: a curve at rest in most frames
        # (mouthShrugUpper, a hand-keyed jawOpen of 1) can be 8-11 training deviations out, where the field
        # was never fitted; it extrapolated there into a washed-out face with holes (cnn2_anchor's held-out
        # chin raise). Beyond the range the face holds the widest pose it learnt.
        self.register_buffer("expression_low", torch.full((n_expression,), -torch.inf))
        self.register_buffer("expression_high", torch.full((n_expression,), torch.inf))
        # The mouth and jaw curves' gain, measured once the head is trained (engine/nerf/mouth_gain.py
        # says why); 1 elsewhere, and during training. It scales the curves after they are held in the
        # range: a field whose steps were cut draws even its widest training pose short of the truth, and
        # a gain applied before the hold could not take its mouth further (speech_coach trained busy:
        # 0.52 -> 0.63 of the person's opening at gains 1 -> 2.5; after the hold, 0.52 -> 0.67 at 2).
        self.register_buffer("expression_gain", torch.ones(n_expression))

    def frame_codes(self, audio_windows: torch.Tensor, expressions: torch.Tensor,
                    neutral_audio: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame conditioning; `neutral_audio` (B,) bool: frames given the neutral audio code (that of
        the clip's mean audio, standardised features of 0) instead of their own (training's dropout)."""
        audio = (audio_windows - self.audio_mean) / self.audio_std
        if neutral_audio is not None:
            audio = torch.where(neutral_audio[:, None, None], torch.zeros_like(audio), audio)
        return self.field.frame_codes(audio, self.standardised_expressions(expressions))

    def standardised_expressions(self, expressions: torch.Tensor) -> torch.Tensor:
        """Standardised, held inside the training frames' range, times the mouth's gain."""
        z = torch.clamp((expressions - self.expression_mean) / self.expression_std, self.expression_low,
                        self.expression_high)
        return z * self.expression_gain

    def set_mouth_gain(self, gain: float) -> None:
        """The gain of the mouth and jaw curves among the head's blendshapes (the others keep 1)."""
        mouth = torch.tensor([ARKIT_NAMES[i] in MOUTH_AND_JAW for i in self.config.expression_indices])
        self.expression_gain.copy_(torch.where(mouth, float(gain), 1.0))

    def set_expression_scale(self, train_expressions: torch.Tensor, min_std: float) -> None:
        """Standardise the blendshapes over the training frames' (n, E), held to the range those show."""
        self.expression_mean.copy_(train_expressions.mean(0))
        self.expression_std.copy_(train_expressions.std(0).clamp(min=min_std))
        self.set_expression_range(train_expressions)

    def set_expression_range(self, train_expressions: torch.Tensor) -> None:
        z = (train_expressions - self.expression_mean) / self.expression_std
        self.expression_low.copy_(z.min(0).values)
        self.expression_high.copy_(z.max(0).values)

    def has_expression_range(self) -> bool:
        return bool(torch.isfinite(self.expression_high).all())

    def load_weights(self, tensors: dict) -> None:
        """load_state_dict, with identity expression scaling (no range, gain 1) for heads saved before they existed."""
        tensors = dict(tensors)
        tensors.setdefault("expression_mean", torch.zeros_like(self.expression_mean))
        tensors.setdefault("expression_std", torch.ones_like(self.expression_std))
        tensors.setdefault("expression_low", torch.full_like(self.expression_low, -torch.inf))
        tensors.setdefault("expression_high", torch.full_like(self.expression_high, torch.inf))
        tensors.setdefault("expression_gain", torch.ones_like(self.expression_gain))
        self.load_state_dict(tensors)

    def mouth_from_audio(self, audio_windows: torch.Tensor) -> torch.Tensor:
        return self.field.mouth_from_audio((audio_windows - self.audio_mean) / self.audio_std)

    def latents_for(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-frame latent codes; rows >= n_latents (frames not trained on) get the mean code."""
        table = self.field.latents.weight
        mean = table.mean(dim=0, keepdim=True)
        inside = rows < len(table)
        return torch.where(inside[:, None], table[rows.clamp(max=len(table) - 1)], mean)

    def torso_latents_for(self, rows: torch.Tensor) -> torch.Tensor:
        table = self.torso.latents.weight
        inside = rows < len(table)
        return torch.where(inside[:, None], table[rows.clamp(max=len(table) - 1)], table.mean(0, keepdim=True))

    def render_head(self, rays: Rays, codes, latents, samples: int, perturb=False, training=False):
        return render_rays(self.field, self.grid, rays, codes, latents, samples, perturb, training)
