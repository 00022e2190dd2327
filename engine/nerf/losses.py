"""Training losses: uncertainty-weighted L1 for the head, plain L1 for lips and torso, LPIPS when present.

LPIPS needs AlexNet/VGG weights that no package here ships; it is used only when the `lpips`
package imports with its weights already on disk, and never triggers a download.
"""
from __future__ import annotations

import torch

UNCERTAINTY_FLOOR = 0.05  # keeps 1/b bounded: no pixel can weigh more than 20x the average


def uncertainty_weighted_l1(pred: torch.Tensor, target: torch.Tensor, uncertainty: torch.Tensor) -> torch.Tensor:
    """Laplace negative log-likelihood: |error| / b + log b with b = floor + the ray's uncertainty.

    Rays the field marks as uncertain (fast-moving hair, specular glints, parsing errors) weigh
    less; the log b term stops the field from calling everything uncertain.
    """
    b = UNCERTAINTY_FLOOR + uncertainty
    error = (pred - target).abs().mean(dim=-1)
    return (error / b + torch.log(b)).mean() - torch.log(torch.tensor(UNCERTAINTY_FLOOR, device=pred.device))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = float(((pred - target) ** 2).mean())
    return 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item()


def load_lpips(device):
    """An LPIPS(AlexNet) module if its package and weights are already installed, else None (no download)."""
    try:
        import lpips  # noqa: F401
        from torch.hub import get_dir
    except Exception:
        return None
    from pathlib import Path
    if not any(Path(get_dir()).glob("checkpoints/alexnet-*.pth")):
        return None
    import lpips
    return lpips.LPIPS(net="alex", verbose=False).to(device).eval()
