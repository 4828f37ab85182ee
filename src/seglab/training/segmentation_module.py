"""One Lightning module for every segmentation network of the project (ACDC and LGG studies).

The network is an argument, so the same loop trains MONAI's UNet family for the 4-class cardiac
masks and segmentation-models-pytorch networks for the binary brain masks:

- ``num_classes > 1``: softmax over the classes, labels ``[B, H, W]`` (0 = background);
- ``num_classes == 1``: a sigmoid foreground map, labels ``[B, H, W]`` or ``[B, 1, H, W]``
  in {0, 1}.

Batches are ``(image [B, C, H, W], label)``. Loss: MONAI's Dice + cross-entropy (binary
cross-entropy in sigmoid mode), or either term alone; Adam (or AdamW) at ``lr``, constant or
with a linear warm-up and a cosine or polynomial decay per optimiser step that ends with the
training (its last epoch, or its wall-time budget when it has one and that comes first). Logged
per epoch: ``train_loss``, ``val_loss``, ``val_accuracy`` (pixels) and, per foreground class,
``val_dice_<c>`` and ``val_iou_<c>`` with ``val_dice_mean``/``val_iou_mean`` the mean of the
class means (in sigmoid mode ``val_dice`` and ``val_iou``). A class absent from both the ground
truth and the prediction of a slice is left out of that class's mean; a false positive counts
as 0, as in :mod:`seglab.metrics.overlap`. Checkpointing and early stopping watch :attr:`monitor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from monai.losses import DiceCELoss
from torch import Tensor, nn

from seglab.config import (
    AugmentParams,
    LossName,
    OptimizerName,
    RecipeParams,
    ScheduleName,
)
from seglab.training.augment import BatchAugment
from seglab.training.scores import EpochOverlap

#: The four flips of a 2D image (none, left-right, up-down, both) averaged at inference.
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def flip_averaged_softmax(net: nn.Module, image: Tensor) -> Tensor:
    """Class probabilities ``[B, C, H, W]`` of ``image`` averaged over its four flips, each
    flipped back (nnU-Net's mirroring at inference): the networks train on flipped slices, so
    each flip is a second opinion on the same anatomy."""
    total = net(image).softmax(1)
    for dims in FLIPS[1:]:
        total = total + net(image.flip(dims)).softmax(1).flip(dims)
    return total / len(FLIPS)


def lr_factor(
    step: int, total: int, warmup: int, schedule: ScheduleName, time_used: float = 0.0
) -> float:
    """The learning-rate multiplier at optimiser ``step`` of ``total``: a linear warm-up from
    ``1 / warmup`` over ``warmup`` steps, then constant, cosine to 0 or poly (1 - t)^0.9 to 0.
    The decay's progress ``t`` is the larger of the steps' and ``time_used``, the fraction of a
    wall-time budget spent, so that it reaches 0 whichever ends the training first.

    >>> [round(lr_factor(s, 10, 2, "cosine"), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    >>> round(lr_factor(2, 10, 2, "cosine", time_used=0.5), 3)
    0.5
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = min(1.0, max((step - warmup) / max(1, total - warmup), time_used))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - t) ** 0.9


def recipe_kwargs(recipe: RecipeParams) -> dict[str, Any]:
    """The module's training settings from a recipe section (``segmenters.train`` of an
    architecture, ``architectures.train``), as keyword arguments of :class:`SegmentationModule`."""
    return {**recipe.settings(), "augment": recipe.augment}


def _budget_used(trainer: L.Trainer) -> Callable[[], float]:
    """The fraction of the trainer's wall-time budget (``max_time``) spent so far, as its timer
    counts it (resumed trainings included); 0 without a budget."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
    if timer is None or timer.time_remaining() is None:
        return lambda: 0.0
    budget = timer.time_elapsed() + timer.time_remaining()
    return lambda: timer.time_elapsed() / budget


class SegmentationModule(L.LightningModule):
    """Trains ``net`` (logits ``[B, num_classes, H, W]``) with optional on-device augmentation.

    ``batch_dice`` pools the Dice term over the batch (nnU-Net's choice for 2D) instead of per
    slice: on a slice without a structure, that structure's per-slice term saturates at 1 for
    any false positive and gives it almost no gradient (only the background's term and the
    cross-entropy push it back); pooled, it does.

    ``class_names`` maps foreground label ids to metric names (``{3: "lv", 2: "myo", 1: "rv"}``);
    by default the ids themselves. ``hparams`` is stored in the checkpoint beside the module's own
    settings (e.g. the architecture and its sizes, to rebuild ``net``). Load a checkpoint with
    ``SegmentationModule.load_from_checkpoint(path, net=<same architecture>)``.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        *,
        lr: float = 1e-3,
        loss: LossName = "dice_ce",
        batch_dice: bool = False,
        optimizer: OptimizerName = "adam",
        weight_decay: float = 0.0,
        schedule: ScheduleName = "constant",
        warmup_epochs: float = 0.0,
        class_names: Mapping[int, str] | None = None,
        monitor: str | None = None,
        augment: AugmentParams | Mapping[str, Any] | None = None,
        fixed_channels: int = 0,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.net = net
        self.num_classes = num_classes
        self.lr = lr
        self.optimizer_name: OptimizerName = optimizer
        self.weight_decay = weight_decay
        self.schedule: ScheduleName = schedule
        self.warmup_epochs = warmup_epochs
        foreground = [1] if num_classes == 1 else list(range(1, num_classes))
        names = dict(class_names or {})
        self.class_ids = foreground
        self.class_names = [str(names.get(i, i)) for i in foreground]
        self.overlap = EpochOverlap(foreground, num_classes)
        self.monitor = monitor or ("val_iou" if num_classes == 1 else "val_dice_mean")
        augment_params = (
            AugmentParams.model_validate(augment) if isinstance(augment, Mapping) else augment
        )
        self.augment = BatchAugment(augment_params) if augment_params is not None else None
        # Trailing input channels that say where a slice is, not what it shows (the slice's
        # place in its stack): augmentation leaves them as they are.
        self.fixed_channels = fixed_channels
        # Plain types only: checkpoints are read back with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "lr": lr,
                "loss": loss,
                "batch_dice": batch_dice,
                "optimizer": optimizer,
                "weight_decay": weight_decay,
                "schedule": schedule,
                "warmup_epochs": warmup_epochs,
                "class_names": {i: n for i, n in zip(foreground, self.class_names, strict=True)},
                "monitor": self.monitor,
                "augment": augment_params.model_dump() if augment_params else None,
                **dict(hparams or {}),
            },
            logger=False,
        )
        lambda_dice = 0.0 if loss == "ce" else 1.0
        lambda_ce = 0.0 if loss == "dice" else 1.0
        self.loss = DiceCELoss(
            to_onehot_y=num_classes > 1,
            softmax=num_classes > 1,
            sigmoid=num_classes == 1,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
            batch=batch_dice,
        )

    @property
    def network(self) -> nn.Module:
        """The network (what the trainer's ``channels_last`` and ``compile`` apply to)."""
        return self.net

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)

    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser alone at ``lr``, e.g. for a loop without a Trainer: Adam, AdamW, or
        nnU-Net's SGD (Nesterov momentum 0.99, its fixed choice beside a poly decay from 1e-2)."""
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                self.parameters(),
                lr=self.lr,
                momentum=0.99,
                nesterov=True,
                weight_decay=self.weight_decay,
            )
        kind = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        return kind(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def configure_optimizers(self) -> Any:
        """The optimiser, and a per-step schedule unless it is constant without warm-up (the
        schedule's length comes from the Trainer: its steps, or its wall-time budget)."""
        optimizer = self.optimizer()
        if self.schedule == "constant" and self.warmup_epochs == 0:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = round(self.warmup_epochs * per_epoch)
        used = _budget_used(self.trainer)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, warmup, self.schedule, used())
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on the device they were moved to (never val/test/predict)."""
        if self.augment is not None and self.trainer.training:
            image, label = batch
            split = image.shape[1] - self.fixed_channels
            image_out, label_out = self.augment(image[:, :split], label)
            return torch.cat([image_out, image[:, split:]], dim=1), label_out
        return batch

    def _label_map(self, label: Tensor) -> Tensor:
        """A batch's labels as one label map per predicted image, ``[B, H, W]``: the hook a
        module whose batches are not single images (a stack of slices) overrides."""
        return label[:, 0] if label.ndim == 4 else label

    def _target(self, label: Tensor) -> Tensor:
        """``[B, 1, H, W]`` float labels, as MONAI's losses take them."""
        return self._label_map(label).unsqueeze(1).float()

    def labels(self, logits: Tensor) -> Tensor:
        """Predicted label map ``[B, H, W]`` (uint8): argmax, or sigmoid > 0.5 in binary mode."""
        if self.num_classes == 1:
            return (logits[:, 0] > 0).to(torch.uint8)
        return logits.argmax(dim=1).to(torch.uint8)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        image, label = batch
        loss = self.loss(self(image).float(), self._target(label))
        self.log(
            "train_loss", loss, on_step=False, on_epoch=True, batch_size=len(image), sync_dist=True
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self.overlap.reset()

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        image, label = batch
        logits = self(image).float()
        loss = self.loss(logits, self._target(label))
        self.log("val_loss", loss, batch_size=len(logits), sync_dist=True)
        self.overlap.add(self.labels(logits), self._label_map(label))

    def on_validation_epoch_end(self) -> None:
        if not self.overlap.sums:
            return
        scores = self.overlap.compute(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        metrics: dict[str, Tensor] = {"val_accuracy": scores["accuracy"]}
        for key in ("dice", "iou"):
            per_class = scores[key]  # NaN: never present
            if self.num_classes == 1:
                metrics[f"val_{key}"] = per_class[0]
                continue
            for name, value in zip(self.class_names, per_class, strict=True):
                metrics[f"val_{key}_{name}"] = value
            metrics[f"val_{key}_mean"] = per_class.nanmean()
        self.log_dict(metrics, sync_dist=True)  # already reduced: the same on every process

    def predict_step(self, batch: Sequence[Tensor] | Tensor, batch_idx: int) -> Tensor:
        """Label maps ``[B, H, W]`` (uint8) of a batch of images (or ``(image, ...)`` tuples);
        with the hyper-parameter ``flips`` (chosen after training), from the softmax averaged
        over the image's four flips."""
        image = batch if isinstance(batch, Tensor) else batch[0]
        if self.hparams.get("flips", False) and self.num_classes > 1:
            return flip_averaged_softmax(self, image).argmax(1).to(torch.uint8)
        return self.labels(self(image))
