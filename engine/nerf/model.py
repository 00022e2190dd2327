"""The talking head's modules: field, occupancy grid and torso, with the conditioning's normalisation.

SUBJECT/model/head.safetensors holds their weights (the occupancy grid included), SUBJECT/model/head.json
the HeadConfig they are built from (engine/nerf/config.py). Rendering frames is talking_head.py's.
"""
from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

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

    def frame_codes(self, audio_windows: torch.Tensor, expressions: torch.Tensor,
                    neutral_audio: torch.Tensor | None = None) -> torch.Tensor:
        """Per-frame conditioning; `neutral_audio` (B,) bool: frames given the neutral audio code (that of
        the clip's mean audio, standardised features of 0) instead of their own (training's dropout)."""
        audio = (audio_windows - self.audio_mean) / self.audio_std
        if neutral_audio is not None:
            audio = torch.where(neutral_audio[:, None, None], torch.zeros_like(audio), audio)
        return self.field.frame_codes(audio, (expressions - self.expression_mean) / self.expression_std)

    def load_weights(self, tensors: dict) -> None:
        """load_state_dict, with identity expression scaling for heads saved before it existed."""
        tensors = dict(tensors)
        tensors.setdefault("expression_mean", torch.zeros_like(self.expression_mean))
        tensors.setdefault("expression_std", torch.ones_like(self.expression_std))
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
