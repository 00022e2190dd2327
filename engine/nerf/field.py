"""The talking-head radiance field (SyncTalk's head model).

For a point x seen from direction d in frame f:
  spatial  = tri-plane hash encoding of x (36-d)
  audio    = attention over a window of per-frame audio codes (one 32-d code per frame)
  express  = the frame's expression blendshapes (7 upper-face values by default)
  masks    = region attention from the spatial feature: which audio / expression channels act here
  density, geometry = MLP(spatial, audio * mask_a, express * mask_e)
  colour   = MLP(geometry, SH(d), per-frame latent)
  uncertainty = MLP(spatial): how much this point is allowed to be wrong (re-weights the loss)

Training also reads the mouth's blendshapes out of the audio code (a linear readout supervised with
the tracked mouth curves): SyncTalk gets audio features that agree with lip motion from its
audio-visual encoder; this readout gives our encoders' codes the same push from the first step,
instead of waiting for the photometric loss of the few mouth pixels to shape them.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from .encoding import TriPlaneEncoding


class FieldSample(NamedTuple):
    density: torch.Tensor             # (N,)
    rgb: torch.Tensor                 # (N, 3) in [0, 1]
    uncertainty: torch.Tensor         # (N,) how much the point may be wrong (weighs the photometric loss)
    attention: torch.Tensor | None    # (N, C) region attention of the points (a sparsity loss keeps it local)


class RadianceField(Protocol):
    """What the ray marcher (raymarch.render_rays) asks of a field.

    Points are in the unit cube of the occupancy grid's box; `codes` and `latents` are per point
    (a frame's conditioning, repeated for its points). Colour is split from density so that
    rendering colours only the points whose weight counts, after marching on density alone.
    """

    def density_at(self, xyz01: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(N,) density."""

    def geometry_at(self, xyz01: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """density (N,) and the feature (N, G) that colour_at turns into colour."""

    def colour_at(self, feature: torch.Tensor, directions: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """(N, 3) colour in [0, 1] seen from unit `directions`."""

    def __call__(self, xyz01: torch.Tensor, directions: torch.Tensor, codes: torch.Tensor,
                 latents: torch.Tensor) -> FieldSample:
        """Everything at once, with gradients (training)."""


def mlp(sizes: list[int], final_activation: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU(inplace=True))
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


def spherical_harmonics(d: torch.Tensor) -> torch.Tensor:
    """(N, 3) unit directions -> (N, 16) real spherical harmonics up to degree 3 ("degree 4" in tcnn)."""
    x, y, z = d.unbind(-1)
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        1.0925484305920792 * xy, -1.0925484305920792 * yz, 0.94617469575755997 * zz - 0.31539156525251999,
        -1.0925484305920792 * xz, 0.54627421529603959 * (xx - yy),
        0.59004358992664352 * y * (-3 * xx + yy), 2.8906114426405538 * xy * z,
        0.45704579946446572 * y * (1 - 5 * zz), 0.3731763325901154 * z * (5 * zz - 3),
        0.45704579946446572 * x * (1 - 5 * zz), 1.4453057213202769 * z * (xx - yy),
        0.59004358992664352 * x * (-xx + 3 * yy),
    ], dim=-1)


class TruncExp(torch.autograd.Function):
    """exp with a clamped gradient: the usual density activation of hash-grid NeRFs."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15, 15))


def _activated_density(raw: torch.Tensor) -> torch.Tensor:
    return TruncExp.apply(raw - 1.0)  # start a little below 1 so empty space empties fast


class AudioAttention(nn.Module):
    """A window of per-frame audio features (B, W, dim) -> one code (B, code_dim).

    Each frame's feature goes through an MLP (dim -> 256 -> 128 -> code); a small Conv1d stack over
    the window scores the frames and a softmax blends them, so the code leans on the frames that
    carry the current mouth shape.
    """

    def __init__(self, dim: int, window: int = 8, code_dim: int = 32):
        super().__init__()
        self.per_frame = nn.Sequential(nn.Linear(dim, 256), nn.LeakyReLU(0.02, True), nn.Linear(256, 128),
                                       nn.LeakyReLU(0.02, True), nn.Linear(128, code_dim))
        self.score = nn.Sequential(
            nn.Conv1d(code_dim, 16, 3, padding=1), nn.LeakyReLU(0.02, True),
            nn.Conv1d(16, 8, 3, padding=1), nn.LeakyReLU(0.02, True),
            nn.Conv1d(8, 4, 3, padding=1), nn.LeakyReLU(0.02, True),
            nn.Conv1d(4, 1, 3, padding=1))
        self.window = window

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        codes = self.per_frame(windows)                        # (B, W, code)
        scores = self.score(codes.transpose(1, 2))[:, 0]       # (B, W)
        return (torch.softmax(scores, dim=-1)[..., None] * codes).sum(dim=1)


class HeadField(nn.Module):
    """The conditioned field (a RadianceField). Points carry `frame` = the row of their frame in the per-batch codes."""

    def __init__(self, audio_dim: int, n_latents: int, expression_dim: int = 7, audio_window: int = 8,
                 encoding: dict | None = None, latent_dim: int = 4, audio_code_dim: int = 32,
                 hidden: int = 64, geometry_dim: int = 64, mouth_outputs: int = 0, use_tcnn: bool = False):
        super().__init__()
        self.encoding = TriPlaneEncoding(**(encoding or {}), use_tcnn=use_tcnn)
        spatial = self.encoding.output_dim
        self.audio = AudioAttention(audio_dim, audio_window, audio_code_dim)
        self.region_attention = mlp([spatial, 32, audio_code_dim + expression_dim])
        self.density = mlp([spatial + audio_code_dim + expression_dim, hidden, hidden, 1 + geometry_dim])
        self.colour = mlp([geometry_dim + 16 + latent_dim, hidden, 3])
        self.uncertainty = mlp([spatial, 32, 1])
        self.latents = nn.Embedding(n_latents, latent_dim)
        nn.init.zeros_(self.latents.weight)
        self.mouth_readout = nn.Linear(audio_code_dim, mouth_outputs) if mouth_outputs else None
        self.audio_code_dim, self.expression_dim = audio_code_dim, expression_dim

    def frame_codes(self, audio_windows: torch.Tensor, expressions: torch.Tensor) -> torch.Tensor:
        """(B, W, dim), (B, E) -> (B, code + E): the per-frame conditioning, computed once per frame."""
        return torch.cat([self.audio(audio_windows), expressions], dim=-1)

    def mouth_from_audio(self, audio_windows: torch.Tensor) -> torch.Tensor:
        """(B, W, dim) -> (B, mouth_outputs): the mouth curves the audio code carries (training signal)."""
        return self.mouth_readout(self.audio(audio_windows))

    def _hidden(self, spatial: torch.Tensor, codes: torch.Tensor):
        """The density MLP's last hidden layer (N, hidden) and the region attention (N, code + E)."""
        attention = torch.sigmoid(self.region_attention(spatial))
        return self.density[:-1](torch.cat([spatial, codes * attention], dim=-1)), attention

    def geometry(self, spatial: torch.Tensor, codes: torch.Tensor):
        """spatial (N, S), codes (N, code + E) -> density (N,), geometry feature (N, G), attention (N, code+E)."""
        hidden, attention = self._hidden(spatial, codes)
        h = self.density[-1](hidden)
        return _activated_density(h[:, 0]), h[:, 1:], attention

    def forward(self, xyz01: torch.Tensor, directions: torch.Tensor, codes: torch.Tensor,
                latents: torch.Tensor) -> FieldSample:
        """Points in the unit cube (N, 3), unit directions (N, 3), per-point codes and latents."""
        spatial = self.encoding(xyz01)
        density, geometry, attention = self.geometry(spatial, codes)
        return FieldSample(density, self.colour_at(geometry, directions, latents), self.point_uncertainty(spatial),
                           attention)

    def colour_at(self, feature: torch.Tensor, directions: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.colour(torch.cat([feature, spherical_harmonics(directions), latents], dim=-1)))

    def point_uncertainty(self, spatial: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.uncertainty(spatial)[:, 0])

    def density_at(self, xyz01: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Density alone (training's marching pass, the occupancy grid): the last layer's geometry outputs,
        a fifth of the MLPs' work a point, are not computed."""
        hidden, _ = self._hidden(self.encoding(xyz01), codes)
        last = self.density[-1]
        return _activated_density(F.linear(hidden, last.weight[:1], last.bias[:1])[:, 0])

    def geometry_at(self, xyz01: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        density, feature, _ = self.geometry(self.encoding(xyz01), codes)
        return density, feature
