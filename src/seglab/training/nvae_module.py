"""Lightning training of the NVAE: the study's objective, optimiser and diagnostics.

One batch contract serves every NVAE variant: ``(inputs, target)`` with ``inputs``
``[B, in_channels, H, W]`` (a one-hot mask, a predicted mask, or a 12-channel 3-gram) and
``target`` the one-hot ground truth ``[B, 4, H, W]`` (labels ``[B, H, W]`` also work).

Logged per training step (``on_step``): ``train_loss``, ``train_recon``, ``train_kl_total``,
``train_kl_scale_<i>`` (i = 0 finest), ``train_kl_weighted``, ``train_kl_coeff``,
``train_spectral``: the study diagnosed its KL blow-up from exactly these curves. Per
validation epoch: ``val_loss`` (what checkpoints select on), ``val_recon``, ``val_kl_*`` and
the Dice of the posterior-mean reconstruction, ``val_dice_lv``/``_myo``/``_rv``/``_mean``, with
the test's convention (:mod:`seglab.training.scores`): the figure a search prunes on is the one
its objective reports.
Which logger receives them (MLflow) is the caller's choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from seglab.config import NvaeParams
from seglab.data.acdc import LABELS
from seglab.errors import ConfigError
from seglab.models.nvae import Nvae, NvaeOutput, SpectralRegularizer, kl_coefficient, nvae_loss
from seglab.training.scores import EpochOverlap

MONITOR = "val_loss"


class NvaeModule(L.LightningModule):
    """Trains :class:`~seglab.models.nvae.Nvae` with warm-up, balancing and optional spectral reg.

    Validation is deterministic: it decodes the posterior means once, and ``val_loss`` is the
    full objective with the KL coefficient at 1 and no balancing, so epochs stay comparable
    through the warm-up (a warm-up-weighted loss would make the earliest epochs look best).

    ``params`` may be the plain dict that ``save_hyperparameters`` stored, so
    ``NvaeModule.load_from_checkpoint(path)`` rebuilds the same model.
    """

    def __init__(self, params: NvaeParams | Mapping[str, Any], image_size: int = 128) -> None:
        super().__init__()
        self.params = (
            params if isinstance(params, NvaeParams) else NvaeParams.model_validate(params)
        )
        self.save_hyperparameters(
            {"params": self.params.model_dump(mode="json"), "image_size": image_size}
        )
        self.model = Nvae(**self.params.network(), image_size=image_size)
        self.spectral = SpectralRegularizer(self.model) if self.params.spectral_lambda > 0 else None
        self.overlap = EpochOverlap(range(1, self.params.num_classes), self.params.num_classes)

    @property
    def network(self) -> Nvae:
        """The NVAE (what the trainer's ``channels_last`` and ``compile`` apply to)."""
        return self.model

    def forward(self, x: Tensor, sample: bool = True) -> NvaeOutput:
        return self.model(x, sample=sample)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        inputs, target = batch
        p = self.params
        coeff = kl_coefficient(self.global_step, p.kl_warmup_steps, p.kl_warmup_min)
        spectral = None
        if self.spectral is not None:
            spectral = p.spectral_lambda * self.spectral(self.model)
        terms = nvae_loss(
            self.model(inputs), target, p.beta, coeff, p.kl_balance, spectral, self.global_step
        )
        self.log_dict(
            {f"train_{k}": v.detach() for k, v in terms.items()},
            on_step=True,
            on_epoch=False,
            batch_size=inputs.shape[0],
        )
        return terms["loss"]

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        inputs, target = batch
        out = self.model(inputs, sample=False)
        terms = nvae_loss(out, target, self.params.beta, 1.0, False)
        n = inputs.shape[0]
        self.log_dict(
            {f"val_{k}": v for k, v in terms.items() if k not in ("kl_coeff", "spectral")},
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,
        )
        labels = target.argmax(dim=1) if target.dim() == out.logits.dim() else target
        self.overlap.add(out.logits.argmax(dim=1), labels)

    def on_validation_epoch_start(self) -> None:
        self.overlap.reset()

    def on_validation_epoch_end(self) -> None:
        if not self.overlap.sums:
            return
        reduce = lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")  # noqa: E731
        dice = self.overlap.compute(reduce)["dice"]
        classes = range(1, self.params.num_classes)
        scores = {f"val_dice_{LABELS.get(c, f'class{c}').lower()}": dice[c - 1] for c in classes}
        scores["val_dice_mean"] = dice.nanmean()
        self.log_dict(scores, sync_dist=True)  # already reduced: the same on every process

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the global gradient norm at ``optim.grad_clip`` (a Trainer-level value wins)."""
        clip = gradient_clip_val or self.params.optim.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def configure_optimizers(self) -> dict[str, Any]:
        """Adamax with cosine annealing to ``lr_min`` over every optimiser step of the run
        (after the optional linear warm-up)."""
        o = self.params.optim
        optimizer = torch.optim.Adamax(
            self.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
        )
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigError("nvae: the cosine schedule needs max_epochs or max_steps")
        warmup = min(o.warmup_steps, max(0, int(total) - 1))
        scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(1, int(total) - warmup), eta_min=o.lr_min
            )
        )
        if warmup > 0:
            ramp = torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup
            )
            scheduler = torch.optim.lr_scheduler.SequentialLR(
                optimizer, [ramp, scheduler], milestones=[warmup]
            )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
