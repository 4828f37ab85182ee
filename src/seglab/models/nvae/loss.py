"""The NVAE objective: reconstruction + warmed-up, beta-weighted (and balanced) KL per scale.

``loss = recon + kl_coeff * sum_g w_g * beta[scale(g)] * KL_g + spectral``

* ``recon``: categorical cross-entropy summed over pixels, averaged over the batch.
* ``KL_g``: group ``g``'s KL summed over its latent dimensions, averaged over the batch.
* ``beta[i]``: weight of scale ``i`` (0 = finest, as ``NvaeParams.groups_per_scale``).
* ``kl_coeff``: the warm-up coefficient, :func:`kl_coefficient`.
* ``w_g``: KL balancing weights while ``kl_coeff < 1`` (:func:`balance_weights`), else 1.
* ``spectral``: ``lambda * sum sigma_max`` from :class:`SpectralRegularizer`, when used.

A non-finite loss raises :class:`KLDivergenceError` (a :class:`~seglab.errors.SeglabError`): the
CLI prints it as one line and a hyper-parameter search can prune the trial on that type instead
of training on NaNs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from seglab.errors import SeglabError
from seglab.models.nvae.model import NvaeOutput

BALANCE_FLOOR = 0.01


class KLDivergenceError(SeglabError):
    """Training diverged: the loss is NaN or infinite (in the study, the KL blowing up)."""

    def __init__(self, step: int | None, terms: dict[str, float]) -> None:
        self.step = step
        self.terms = terms
        where = "" if step is None else f" at step {step}"
        values = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        super().__init__(
            f"nvae: training diverged{where} ({values}); try fewer stem channels, "
            "a longer KL warm-up, spectral regularisation or a lower learning rate"
        )


def kl_coefficient(step: int, warmup_steps: int, min_coeff: float) -> float:
    """KL warm-up: rises linearly from ``min_coeff`` at step 0 to 1 at ``warmup_steps``, then 1.

    Starting near 0 lets the decoder learn to use the latents before the KL pushes the
    posteriors onto the prior (the cause of posterior collapse).
    """
    if warmup_steps <= 0:
        return 1.0
    progress = min(max(step, 0) / warmup_steps, 1.0)
    return min_coeff + (1.0 - min_coeff) * progress


def balance_weights(kl_groups: Tensor) -> Tensor:
    """KL balancing weights ``[groups]`` from per-sample group KLs ``[groups, B]``.

    ``w_g ∝ mean_batch |KL_g| + 0.01``, normalised to mean 1 over the groups and detached. Groups
    carrying more KL are penalised more, pushing information into the idle groups so that none
    collapses during warm-up. This is the simpler variant: the paper additionally multiplies by
    a per-scale coefficient (proportional to the group's spatial size), which is not done here.
    """
    weights = kl_groups.detach().abs().mean(dim=1) + BALANCE_FLOOR
    return weights / weights.mean()


def nvae_loss(
    output: NvaeOutput,
    target: Tensor,
    beta: Sequence[float],
    kl_coeff: float,
    balance: bool,
    spectral: Tensor | None = None,
    step: int | None = None,
) -> dict[str, Tensor]:
    """All terms of the objective, as named scalar tensors.

    ``target`` is a one-hot (or probability) map ``[B, classes, H, W]`` or labels ``[B, H, W]``.
    ``spectral`` is the already weighted regulariser (``lambda * sum sigma``). Keys: ``loss``,
    ``recon``, ``kl_total`` (unweighted KL of all groups), ``kl_scale_<i>`` (unweighted KL of
    scale ``i``, 0 = finest), ``kl_weighted`` (the KL term inside ``loss``), ``kl_coeff``,
    ``spectral``; ``loss = recon + kl_weighted + spectral``.
    """
    logits = output.logits.float()
    if target.dim() == logits.dim():
        target = target.float()
    else:
        target = target.long()
    recon = F.cross_entropy(logits, target, reduction="sum") / logits.shape[0]

    kl_groups = output.kl_per_group()  # [G, B]
    kl_mean = kl_groups.mean(dim=1)
    scales = torch.tensor(output.group_scales, device=kl_mean.device)
    n_scales = len(beta)
    betas = torch.tensor([beta[s] for s in output.group_scales], device=kl_mean.device)
    weights = balance_weights(kl_groups) if balance and kl_coeff < 1.0 else torch.ones_like(betas)
    kl_weighted = kl_coeff * (weights * betas * kl_mean).sum()
    spectral_term = torch.zeros((), device=recon.device) if spectral is None else spectral
    loss = recon + kl_weighted + spectral_term

    terms = {
        "loss": loss,
        "recon": recon,
        "kl_total": kl_mean.sum(),
        **{f"kl_scale_{i}": kl_mean[scales == i].sum().detach() for i in range(n_scales)},
        "kl_weighted": kl_weighted,
        "kl_coeff": torch.tensor(kl_coeff, device=recon.device),
        "spectral": spectral_term,
    }
    if not torch.isfinite(loss):
        raise KLDivergenceError(step, {k: float(v.detach()) for k, v in terms.items()})
    return terms
