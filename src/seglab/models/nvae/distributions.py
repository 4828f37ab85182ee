"""Diagonal Gaussians of the latent groups, with NVAE's soft clamping and residual posterior.

Parameterisation (Vahdat & Kautz 2020, sec. 3.2), exactly as implemented:

* a head outputs raw ``(a, b)`` (channels split in half); ``mu = 5 tanh(a / 5)``,
  ``log_sigma = 5 tanh(b / 5)`` and ``sigma = exp(log_sigma) + 0.01``. The soft clamp keeps
  early updates from sending the means and scales to extreme values; the 0.01 floor keeps
  ``1 / sigma`` bounded in the KL.
* the residual posterior of a group relative to its prior ``N(mu_p, sigma_p)`` is
  ``N(mu_p + 5 tanh(da / 5), sigma_p * exp(5 tanh(db / 5)))``: the encoder only predicts how far
  the posterior moves from the prior, so ``da = db = 0`` gives the prior itself (KL exactly 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

CLAMP = 5.0
SIGMA_FLOOR = 0.01


def soft_clamp(x: Tensor, bound: float = CLAMP) -> Tensor:
    """Smooth clamp to ``(-bound, bound)``: ``bound * tanh(x / bound)`` (gradient never 0)."""
    return bound * torch.tanh(x / bound)


@dataclass(frozen=True)
class Gaussian:
    """Elementwise independent normal ``N(mu, sigma^2)``; every tensor ``[B, L, h, w]``."""

    mu: Tensor
    sigma: Tensor

    @classmethod
    def from_raw(cls, raw: Tensor) -> Gaussian:
        """From a head's ``[B, 2L, h, w]`` output: clamped mean and log-scale, ``sigma`` floored."""
        a, b = raw.float().chunk(2, dim=1)
        return cls(soft_clamp(a), torch.exp(soft_clamp(b)) + SIGMA_FLOOR)

    @classmethod
    def standard(cls, shape: tuple[int, ...], device: torch.device) -> Gaussian:
        """``N(0, I)`` of the given shape (float32)."""
        zeros = torch.zeros(shape, device=device)
        return cls(zeros, torch.ones_like(zeros))

    def residual(self, raw_delta: Tensor) -> Gaussian:
        """The posterior relative to this prior, from the encoder head output ``[B, 2L, h, w]``."""
        da, db = raw_delta.float().chunk(2, dim=1)
        return Gaussian(self.mu + soft_clamp(da), self.sigma * torch.exp(soft_clamp(db)))

    def sample(self, temperature: float = 1.0) -> Tensor:
        """Reparameterised draw ``mu + temperature * sigma * eps`` (differentiable in mu, sigma)."""
        return self.mu + temperature * self.sigma * torch.randn_like(self.mu)

    def kl(self, prior: Gaussian) -> Tensor:
        """Elementwise ``KL(self || prior)``, closed form.

        With ``r = sigma_q / sigma_p`` and ``t = (mu_q - mu_p) / sigma_p`` it is
        ``(r^2 + t^2 - 1) / 2 - log r``; for the residual posterior this is the paper's eq. 2.
        """
        r = self.sigma / prior.sigma
        t = (self.mu - prior.mu) / prior.sigma
        return 0.5 * (r * r + t * t - 1.0) - torch.log(r)
