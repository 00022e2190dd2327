"""The torso: a small 2D deformable network conditioned on the head pose.

The torso moves with the head (shoulders follow the neck), but is nearly flat in the image, so a
2D canvas suffices: a pose-conditioned MLP offsets each pixel's coordinate, a 2D hash grid at the
offset coordinate gives a feature, and an MLP turns it (with a per-frame latent) into colour and
alpha. The result is composited over the background plate, and the head over it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .encoding import HashGrids2D
from .field import mlp


def frequency_encoding(uv: torch.Tensor, octaves: int = 4) -> torch.Tensor:
    scaled = uv[..., None] * (2.0 ** torch.arange(octaves, device=uv.device)) * math.pi  # (N, 2, O)
    return torch.cat([uv, torch.sin(scaled).flatten(1), torch.cos(scaled).flatten(1)], dim=-1)


class TorsoNet(nn.Module):
    POSE_DIM = 12

    def __init__(self, n_latents: int, size: int, latent_dim: int = 8, hidden: int = 64):
        super().__init__()
        self.pose_code = nn.Linear(self.POSE_DIM, 16)
        self.deform = mlp([2 + 16 + 16, hidden, hidden, 2])
        nn.init.zeros_(self.deform[-1].weight)
        nn.init.zeros_(self.deform[-1].bias)
        self.canvas = HashGrids2D(1, levels=12, features=2, base_resolution=16, finest_resolution=max(64, size),
                                  log2_table=16)
        self.colour = mlp([self.canvas.output_dim + latent_dim + 16, hidden, hidden, 4])
        self.latents = nn.Embedding(n_latents, latent_dim)
        nn.init.zeros_(self.latents.weight)

    def forward(self, uv: torch.Tensor, pose: torch.Tensor, latent: torch.Tensor):
        """uv (N, 2) in [0, 1], pose (N, 12), latent (N, latent_dim) -> rgb (N, 3), alpha (N,)."""
        code = self.pose_code(pose)
        offset = 0.1 * torch.tanh(self.deform(torch.cat([frequency_encoding(uv), code], dim=-1)))
        feature = self.canvas((uv + offset).clamp(0.0, 1.0)[:, None, :])
        out = self.colour(torch.cat([feature, latent, code], dim=-1))
        return torch.sigmoid(out[:, :3]), torch.sigmoid(out[:, 3])
