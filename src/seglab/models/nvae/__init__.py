"""Hierarchical NVAE for segmentation masks: model, loss terms and spectral regulariser."""

from seglab.models.nvae.distributions import Gaussian, soft_clamp
from seglab.models.nvae.loss import (
    KLDivergenceError,
    balance_weights,
    kl_coefficient,
    nvae_loss,
)
from seglab.models.nvae.model import Nvae, NvaeOutput
from seglab.models.nvae.spectral import SpectralRegularizer

__all__ = [
    "Gaussian",
    "KLDivergenceError",
    "Nvae",
    "NvaeOutput",
    "SpectralRegularizer",
    "balance_weights",
    "kl_coefficient",
    "nvae_loss",
    "soft_clamp",
]
