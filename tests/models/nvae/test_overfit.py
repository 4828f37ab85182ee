"""A tiny NVAE learns a handful of synthetic cardiac-like masks (the model can fit at all)."""

from __future__ import annotations

import torch
from monai.metrics import compute_dice
from torch.nn import functional as F

from seglab.config import NvaeParams
from seglab.models.nvae import Nvae, kl_coefficient, nvae_loss


def _rings(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """One-hot masks: an LV disc (3) inside a MYO ring (2), an RV disc (1) beside them."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cy, cx = (size * (0.4 + 0.2 * torch.rand(2, generator=g))).tolist()
        r = size * (0.12 + 0.08 * torch.rand(1, generator=g).item())
        d = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        labels[i][((yy - cy) ** 2 + (xx - cx + 1.6 * r) ** 2).sqrt() < 1.3 * r] = 1
        labels[i][d < 1.5 * r] = 2
        labels[i][d < r] = 3
    return F.one_hot(labels, 4).permute(0, 3, 1, 2).float()


def test_tiny_nvae_overfits_a_handful_of_masks() -> None:
    torch.manual_seed(0)
    x = _rings(6, 32)
    assert all(x[:, c].sum() > 0 for c in range(4))
    params = NvaeParams(
        stem_channels=8,
        preprocess_blocks=1,
        groups_per_scale=(1, 1),
        latent_channels=8,
        beta=(1.0, 1.0),
        kl_warmup_steps=10_000,
    )
    model = Nvae(**params.network(), image_size=32)
    o = params.optim
    opt = torch.optim.Adamax(
        model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    )
    first = None
    for step in range(80):
        coeff = kl_coefficient(step, params.kl_warmup_steps, params.kl_warmup_min)
        terms = nvae_loss(model(x), x, params.beta, coeff, params.kl_balance, step=step)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = first if first is not None else terms["recon"].item()
    model.eval()
    dice = compute_dice(model.reconstruct(x), x, include_background=False, ignore_empty=False)
    assert terms["recon"].item() < 0.2 * first
    assert dice.mean().item() > 0.95, dice
