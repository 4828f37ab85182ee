"""The brain study's figures: overlap of binary FLAIR-abnormality masks and speed (the
comparison's table and plots: :mod:`seglab.evaluation.lgg_comparison`).

Overlap conventions (the project's, as in :mod:`seglab.metrics.overlap` and the training
module's ``val_iou``):

* **Per slice.** IoU and Dice of the tumour mask (MONAI ``compute_iou``/``compute_dice``). A
  slice empty in both the ground truth and the prediction is a true negative: it has no IoU and
  is left out of the means, never counted as a perfect 1. A tumour predicted on an empty slice
  (or missed on a tumour slice) scores 0. ``iou`` and ``dice_mean`` are the means over the slices
  that have a value; for a binary mask, ``dice_mean`` (the project's mean over foreground
  classes) is the mean Dice of the one tumour class.
* **Per patient volume.** IoU and Dice of the whole stack of a patient's slices (3D overlap),
  averaged over patients: ``iou_volume``, ``dice_volume``. Large tumours weigh more than in the
  per-slice means, and scattered false positives on empty slices count.
* **Empty-mask slices apart.** Pixel ``accuracy`` is near 100% on a slice without tumour whatever
  a model does (the tumour is a few percent of a slice), so it is also reported on tumour slices
  (``accuracy_tumour_slices``, with ``iou_tumour_slices``/``dice_tumour_slices``) and on empty
  slices (``accuracy_empty_slices``, and ``empty_slices_false_positive``: the share of empty slices
  on which the model predicts any tumour).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from monai.metrics import compute_dice, compute_iou
from torch import Tensor, nn


def _binary(masks: np.ndarray | Tensor, name: str) -> Tensor:
    """``[N, H, W]`` (or one ``[D, H, W]`` volume) as a float tensor of 0/1."""
    tensor = torch.as_tensor(np.asarray(masks))
    if tensor.ndim != 3:
        raise ValueError(f"{name}: expected [N, H, W] masks, got {tuple(tensor.shape)}")
    if tensor.numel() and not bool(((tensor == 0) | (tensor == 1)).all()):
        raise ValueError(f"{name}: masks must be binary (0/1)")
    return tensor.float()


def _overlap(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and Dice of each item of ``[B, 1, ...]`` masks; NaN where both are empty."""
    iou = compute_iou(pred, gt, include_background=True, ignore_empty=False)[:, 0]
    dice = compute_dice(pred, gt, include_background=True, ignore_empty=False)[:, 0]
    empty = (pred.flatten(1).amax(dim=1) == 0) & (gt.flatten(1).amax(dim=1) == 0)
    nan = torch.tensor(float("nan"))
    return torch.where(empty, nan, iou), torch.where(empty, nan, dice)


def slice_scores(pred: np.ndarray | Tensor, gt: np.ndarray | Tensor) -> pd.DataFrame:
    """One row per slice: ``iou``, ``dice`` (NaN when both masks are empty), pixel ``accuracy``,
    ``tumour`` (the ground truth has tumour) and ``predicted`` (the prediction has)."""
    p, g = _binary(pred, "pred"), _binary(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred {tuple(p.shape)} and gt {tuple(g.shape)} differ in shape")
    iou, dice = _overlap(p[:, None], g[:, None])
    return pd.DataFrame(
        {
            "iou": iou.numpy().astype(float),
            "dice": dice.numpy().astype(float),
            "accuracy": (p == g).flatten(1).float().mean(dim=1).numpy().astype(float),
            "tumour": g.flatten(1).amax(dim=1).numpy() > 0,
            "predicted": p.flatten(1).amax(dim=1).numpy() > 0,
        }
    )


def volume_scores(
    pred: np.ndarray | Tensor, gt: np.ndarray | Tensor, patients: Sequence[str]
) -> pd.DataFrame:
    """One row per patient (in order of first appearance): 3D ``iou`` and ``dice`` of the stack
    of that patient's slices, NaN when both stacks are empty; ``slices``."""
    p, g = _binary(pred, "pred"), _binary(gt, "gt")
    ids = np.asarray(patients).astype(str)
    if len(ids) != len(g) or p.shape != g.shape:
        raise ValueError(f"{len(ids)} patient ids for pred {tuple(p.shape)}, gt {tuple(g.shape)}")
    rows = []
    for pid in pd.unique(ids):
        rows_of = torch.from_numpy(np.flatnonzero(ids == pid))
        iou, dice = _overlap(p[rows_of][None, None], g[rows_of][None, None])
        rows.append(
            {"patient": pid, "iou": float(iou[0]), "dice": float(dice[0]), "slices": len(rows_of)}
        )
    return pd.DataFrame(rows, columns=["patient", "iou", "dice", "slices"])


def _mean(values: pd.Series) -> float:
    defined = values.dropna()
    return float(defined.mean()) if len(defined) else float("nan")


def summarize(
    pred: np.ndarray | Tensor, gt: np.ndarray | Tensor, patients: Sequence[str]
) -> dict[str, float | int]:
    """The :data:`KEYS` figures of a split, then the slice and patient counts behind them."""
    slices = slice_scores(pred, gt)
    volumes = volume_scores(pred, gt, patients)
    tumour, empty = slices[slices["tumour"]], slices[~slices["tumour"]]
    figures: dict[str, float | int] = {
        "iou": _mean(slices["iou"]),
        "dice_mean": _mean(slices["dice"]),
        "accuracy": _mean(slices["accuracy"]),
        "iou_volume": _mean(volumes["iou"]),
        "dice_volume": _mean(volumes["dice"]),
        "iou_tumour_slices": _mean(tumour["iou"]),
        "dice_tumour_slices": _mean(tumour["dice"]),
        "accuracy_tumour_slices": _mean(tumour["accuracy"]),
        "accuracy_empty_slices": _mean(empty["accuracy"]),
        "empty_slices_false_positive": _mean(empty["predicted"].astype(float)),
    }
    return figures | {
        "slices": len(slices),
        "tumour_slices": len(tumour),
        "empty_slices": len(empty),
        "patients": len(volumes),
    }


@torch.no_grad()
def predict_timed(
    net: nn.Module,
    images: Tensor,
    *,
    batch_size: int,
    device: torch.device,
    autocast: torch.dtype | None = None,
) -> tuple[np.ndarray, float]:
    """Binary masks ``[N, H, W]`` (uint8, logit > 0) of ``images`` and the slices per second
    it took: one untimed warm-up batch (lazy initialisation, cuDNN autotuning), then every
    batch timed, inputs moved to ``device`` inside the timing as a deployed model would.

    ``autocast`` is the mixed-precision dtype the model trained with on a GPU (None: fp32).
    """
    net = net.to(device).eval()
    context = torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext()

    def run(batch: Tensor) -> Tensor:
        with context:
            return (net(batch.to(device, non_blocking=True).float())[:, 0] > 0).to(torch.uint8)

    if len(images) == 0:
        return np.zeros((0, *images.shape[2:]), np.uint8), float("nan")
    run(images[:batch_size])
    _sync(device)
    parts = []
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        parts.append(run(images[first : first + batch_size]))
    _sync(device)
    seconds = time.perf_counter() - start
    return torch.cat(parts).cpu().numpy(), len(images) / seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prediction_figure(
    images: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    captions: Sequence[str],
    rows: int = 4,
) -> Figure:
    """FLAIR of a few tumour slices (spread over the split) with the ground-truth (green) and
    predicted (red) outlines. ``images`` is ``[N, 3, H, W]`` (channel 1 is FLAIR)."""
    tumour = np.flatnonzero(gt.reshape(len(gt), -1).any(axis=1))
    pool = tumour if len(tumour) else np.arange(len(gt))
    picks = pool[np.linspace(0, len(pool) - 1, min(rows, len(pool))).round().astype(int)]
    fig = Figure(figsize=(3.0 * max(len(picks), 1), 3.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(picks), 1), squeeze=False)[0])
    for ax, i in zip(axes, picks, strict=False):
        ax.imshow(images[i, 1], cmap="gray")
        for mask, colour in ((gt[i], "tab:green"), (pred[i], "tab:red")):
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=colour, linewidths=1)
        ax.set_title(captions[i], fontsize=7)
        ax.axis("off")
    return fig
