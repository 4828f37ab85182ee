"""ACDCSeg (the segmenters' predicted masks) and its 3-gram context form, as prepared-slice sets.

ACDCSeg has one row per (slice, segmenter): the prepared slice's image, ground truth ``label`` and
metadata, plus the columns ``segmenter`` (architecture name) and ``fold`` (the cross-prediction
fold whose model made the prediction, -1 for the final model), and ``extra["pred"]``, the
predicted label map (uint8 [N, H, W]; one-hot on load).

The 3-gram form adds ``extra["context"]`` (uint8 [N, 3, H, W]): the predicted label maps of the
previous, current and next slice of the same volume (same patient, frame and segmenter); beyond
the first and last slice an all-background "EOS" map stands in. As network input it is one-hot
encoded into 12 channels (4 per slice: prev, cur, next), the target being the current slice's
ground truth (4 channels).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn import functional as F

from seglab.data.labels import NUM_LABELS
from seglab.data.store import SliceSet, load_split, neighbour_rows
from seglab.errors import ConfigError, DataError, SeglabError

#: The rows of one volume: a 3-gram never crosses these.
VOLUME_KEYS = ("segmenter", "patient", "frame")


def acdcseg_rows(
    prepared: SliceSet, pred: np.ndarray, segmenter: str, fold: int | np.ndarray = -1
) -> SliceSet:
    """One segmenter's predictions on a prepared split, as ACDCSeg rows (prepared order)."""
    if pred.shape != prepared.label.shape:
        raise ValueError(f"predictions {pred.shape} do not match the split {prepared.label.shape}")
    meta = prepared.meta.copy()
    meta["segmenter"] = segmenter
    meta["fold"] = np.broadcast_to(np.asarray(fold, dtype=np.int16), len(meta))
    return SliceSet(
        image=prepared.image,
        label=prepared.label,
        meta=meta.reset_index(drop=True),
        extra={"pred": pred.astype(np.uint8)},
    )


def trigram_context(slices: SliceSet, path: Path | str = "<acdcseg>") -> np.ndarray:
    """uint8 [N, 3, H, W]: prev, current and next predicted map of each row's volume.

    ``path`` names the source in errors: a volume with a slice index missing inside its range,
    or a slice given twice, would silently shift the context, so it is refused.
    """
    pred = slices.extra["pred"]
    context = np.zeros((len(pred), 3, *pred.shape[1:]), dtype=np.uint8)
    context[:, 1] = pred
    for offset, channel in ((-1, 0), (1, 2)):
        rows = neighbour_rows(slices.meta, VOLUME_KEYS, offset, path)
        inside = rows >= 0
        context[inside, channel] = pred[rows[inside]]
    return context


def trigram_rows(slices: SliceSet, path: Path | str = "<acdcseg>") -> SliceSet:
    """ACDCSeg rows -> 3-gram rows: ``extra["context"]`` replaces ``extra["pred"]`` (= its
    middle channel)."""
    context = trigram_context(slices, path)
    return SliceSet(
        image=slices.image, label=slices.label, meta=slices.meta, extra={"context": context}
    )


def onehot(labels: Tensor | np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
    """Label maps ``[N, K, H, W]`` (or ``[N, H, W]``) -> ``[N, 4K, H, W]`` (or ``[N, 4, H, W]``).

    Channels are grouped by map: 4 for the first map (background, RV, MYO, LV), then the next.
    Cheap enough to run per batch on the device, which keeps the stored data 4x smaller.
    """
    if isinstance(labels, np.ndarray):
        # A copy as int64, as .long() would make: also for read-only arrays (a loaded or
        # broadcast one), which torch.as_tensor would share and warn about.
        tensor = torch.from_numpy(labels.astype(np.int64))
    else:
        tensor = torch.as_tensor(labels).long()
    hot = F.one_hot(tensor, NUM_LABELS).to(dtype)  # [..., H, W, 4]
    if tensor.ndim == 3:
        return hot.permute(0, 3, 1, 2)
    return hot.permute(0, 1, 4, 2, 3).flatten(1, 2)


def load_trigram(path: Path, as_onehot: bool = True) -> tuple[Tensor, Tensor, pd.DataFrame]:
    """A 3-gram split as ``(inputs, target, meta)``.

    With ``as_onehot``, inputs are float ``[N, 12, H, W]`` and the target ``[N, 4, H, W]``;
    without, the stored uint8 maps ``[N, 3, H, W]`` and ``[N, H, W]``, to be one-hot encoded per
    batch with :func:`onehot` (at real scale the one-hot train split would take ~4 GB as float).
    """
    slices = load_split(Path(path))
    if "context" not in slices.extra:
        raise DataError(path, "not a 3-gram split (no 'context' array)")
    context = torch.from_numpy(slices.extra["context"])
    target = torch.from_numpy(slices.label)
    if as_onehot:
        return onehot(context), onehot(target), slices.meta
    return context, target, slices.meta


Source = Literal["gt", "pred", "context"]
#: Where each input source lives in a slice set (``gt`` is the label map itself).
SOURCE_ARRAYS: dict[str, str] = {"pred": "pred", "context": "context"}


def nvae_tensors(
    slices: SliceSet, source: Source = "gt", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` one-hot: targets ``[N, 4, H, W]`` from the ground truth, inputs
    from ``source``: ``gt`` (the same masks), ``pred`` (ACDCSeg's predicted masks, 4 channels) or
    ``context`` (3-gram rows: previous, current, next prediction, 12 channels).

    ``dtype=torch.uint8`` keeps 3-gram sets 4x smaller in memory; the model scales inputs to
    ``2x - 1`` in floating point either way.
    """
    targets = onehot(slices.label, dtype)
    if source == "gt":
        return targets, targets
    if source not in SOURCE_ARRAYS:
        raise ConfigError(f"unknown NVAE input source '{source}' (gt, pred, context)")
    key = SOURCE_ARRAYS[source]
    if key not in slices.extra:
        kind = "ACDCSeg" if key == "pred" else "3-gram"
        raise SeglabError(f"NVAE input source '{source}' needs {kind} rows (no '{key}' array)")
    return onehot(slices.extra[key], dtype), targets
