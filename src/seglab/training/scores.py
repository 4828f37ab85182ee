"""Validation overlap per epoch, with the convention of :mod:`seglab.metrics.overlap`: a class
absent from both the ground truth and the prediction of a slice is left out of that class's mean,
and a false positive or a miss counts 0. So an empty prediction never scores (a per-batch
``compute_dice(ignore_empty=False)`` would give it 1 on every slice without the class), and the
figure a checkpoint, a pruner or a progress line watches is the one the test reports.

Sums and counts are kept per class over every validation batch and reduced across processes at
the end of the epoch, so the figure does not depend on the batch size or the number of devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.metrics import compute_dice, compute_iou
from torch import Tensor
from torch.nn import functional as F


def slice_scores(
    pred: Tensor, target: Tensor, class_ids: Sequence[int], num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per slice: Dice and IoU ``[B, len(class_ids)]`` (NaN where a class is absent from both)
    and pixel accuracy ``[B]``, from label maps ``[B, H, W]``."""
    pred, target = pred.long(), target.long()
    accuracy = (pred == target).flatten(1).float().mean(dim=1)
    count = max(2, num_classes)
    ids = list(class_ids)
    pred_hot = F.one_hot(pred, count).permute(0, 3, 1, 2)[:, ids].float()
    target_hot = F.one_hot(target, count).permute(0, 3, 1, 2)[:, ids].float()
    absent = (pred_hot.flatten(2).amax(dim=2) == 0) & (target_hot.flatten(2).amax(dim=2) == 0)
    dice = compute_dice(pred_hot, target_hot, include_background=True, ignore_empty=False)
    iou = compute_iou(pred_hot, target_hot, include_background=True, ignore_empty=False)
    nan = torch.tensor(float("nan"), device=pred.device)
    return torch.where(absent, nan, dice), torch.where(absent, nan, iou), accuracy


class EpochOverlap:
    """Accumulates :func:`slice_scores` over an epoch's batches.

    >>> acc = EpochOverlap([1], 2)
    >>> acc.add(torch.zeros(2, 4, 4), torch.ones(2, 4, 4))  # an empty prediction
    >>> acc.compute(lambda t: t)["dice"]
    tensor([0.])
    """

    def __init__(self, class_ids: Sequence[int], num_classes: int) -> None:
        self.class_ids = list(class_ids)
        self.num_classes = num_classes
        self.sums: dict[str, Tensor] = {}

    def reset(self) -> None:
        self.sums = {}

    def add(self, pred: Tensor, target: Tensor) -> None:
        dice, iou, accuracy = slice_scores(pred, target, self.class_ids, self.num_classes)
        for key, values in (("dice", dice), ("iou", iou)):
            defined = ~values.isnan()
            self._add(f"{key}_sum", torch.where(defined, values, 0.0).sum(dim=0))
            self._add(f"{key}_count", defined.sum(dim=0).float())
        self._add("accuracy_sum", accuracy.sum())
        self._add("slices", torch.tensor(float(len(pred)), device=pred.device))

    def _add(self, key: str, value: Tensor) -> None:
        self.sums[key] = self.sums[key] + value if key in self.sums else value

    def compute(self, reduce: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
        """Per-class ``dice`` and ``iou`` (NaN: never present) and pixel ``accuracy``;
        ``reduce`` sums a tensor across processes (the strategy's reduce)."""
        sums = {key: reduce(value) for key, value in self.sums.items()}
        return {
            "dice": sums["dice_sum"] / sums["dice_count"],
            "iou": sums["iou_sum"] / sums["iou_count"],
            "accuracy": sums["accuracy_sum"] / sums["slices"],
        }
