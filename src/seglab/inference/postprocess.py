"""Connected-component clean-up of predicted label maps, chosen on the validation split.

A 2D segmenter sees one slice at a time, so it can leave islands: a few RV pixels in an apical
slice, a blob of "LV" in the liver. Each island costs a whole slice's Dice for that structure (a
false positive counts 0) and makes the mask anatomically invalid. As nnU-Net does, the clean-up
is a choice measured on the validation split, never assumed: :func:`choose` keeps a method only
when it raises the validation Dice.

Two steps, each slice on its own: first every region of a structure smaller than
``min_pixels`` is dropped (most false positives on slices beyond the base or the apex are a few
dozen pixels), then one of the methods (MONAI's ``KeepLargestConnectedComponent``):

- ``none``: nothing more;
- ``heart``: keep the largest connected region of the foreground as a whole (any label),
  dropping everything detached from the heart;
- ``structures``: keep the largest connected region of each label separately.

Dropped pixels become background. :func:`choose` tries every method with every size in
:data:`MIN_PIXELS`.

>>> import numpy as np
>>> mask = np.zeros((1, 8, 8), np.uint8); mask[0, 1:4, 1:4] = 3; mask[0, 6, 6] = 1
>>> int(postprocess(mask, "heart").sum() // 3)
9
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent
from scipy import ndimage

from seglab.data.labels import STRUCTURE_LABELS

Method = Literal["none", "heart", "structures"]
METHODS: tuple[Method, ...] = get_args(Method)
#: The region sizes (pixels) below which :func:`choose` tries dropping a structure's regions.
MIN_PIXELS: tuple[int, ...] = (0, 10, 20, 40)
#: 8-connected regions, as MONAI's connected components use by default in 2D.
_CONNECTED = np.ones((3, 3), dtype=bool)


def drop_small(pred: np.ndarray, min_pixels: int) -> np.ndarray:
    """``pred`` with every connected region of a structure below ``min_pixels`` set to
    background (a new array)."""
    out = pred.copy()
    if min_pixels <= 0:
        return out
    for mask in out:
        for label in STRUCTURE_LABELS:
            regions, count = ndimage.label(mask == label, structure=_CONNECTED)
            if count:
                sizes = np.bincount(regions.ravel())
                small = np.flatnonzero(sizes < min_pixels)
                mask[np.isin(regions, small[small > 0])] = 0
    return out


def postprocess(pred: np.ndarray, method: Method, min_pixels: int = 0) -> np.ndarray:
    """``pred`` uint8 ``[N, H, W]`` label maps, cleaned slice by slice (a new array)."""
    if method not in METHODS:
        raise ValueError(f"unknown post-processing '{method}' (known: {', '.join(METHODS)})")
    out = drop_small(pred, min_pixels)
    if method == "none":
        return out
    keep = KeepLargestConnectedComponent(
        applied_labels=list(STRUCTURE_LABELS), independent=method == "structures"
    )
    for i, mask in enumerate(out):
        out[i] = np.asarray(keep(torch.from_numpy(mask[None].astype(np.int64))))[0]
    return out


def choose(
    pred: np.ndarray, score: Callable[[np.ndarray], float]
) -> tuple[tuple[Method, int], dict[str, float]]:
    """The ``(method, min_pixels)`` with the highest ``score`` (e.g. validation Dice) of
    ``pred``, and every score, keyed ``<method>_min<pixels>``.

    Ties go to the simpler clean-up (``none`` first, then the smaller size): a clean-up must
    earn its place.
    """
    scores: dict[str, float] = {}
    best: tuple[float, int, int, Method] | None = None
    for rank, method in enumerate(METHODS):
        for size in MIN_PIXELS:
            value = float(score(postprocess(pred, method, size)))
            scores[f"{method}_min{size}"] = value
            if best is None or (value, -rank, -size) > best[:3]:
                best = (value, -rank, -size, method)
    assert best is not None
    return (best[3], -best[2]), scores
