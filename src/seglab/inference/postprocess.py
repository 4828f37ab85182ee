"""Connected-component clean-up of predicted label maps, chosen on the validation split.

A 2D segmenter sees one slice at a time, so it can leave islands: a few RV pixels in an apical
slice, a blob of "LV" in the liver. Each island costs a whole slice's Dice for that structure (a
false positive counts 0) and makes the mask anatomically invalid. As nnU-Net does, the clean-up
is a choice measured on the validation split, never assumed: :func:`choose` keeps a method only
when it raises the validation Dice.

Methods (MONAI's ``KeepLargestConnectedComponent`` per slice):

- ``none``: the network's argmax as it is;
- ``heart``: keep the largest connected region of the foreground as a whole (any label),
  dropping everything detached from the heart;
- ``structures``: keep the largest connected region of each label separately.

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

from seglab.metrics.labels import STRUCTURE_LABELS

Method = Literal["none", "heart", "structures"]
METHODS: tuple[Method, ...] = get_args(Method)


def postprocess(pred: np.ndarray, method: Method) -> np.ndarray:
    """``pred`` uint8 ``[N, H, W]`` label maps, cleaned slice by slice (a new array)."""
    if method not in METHODS:
        raise ValueError(f"unknown post-processing '{method}' (known: {', '.join(METHODS)})")
    if method == "none":
        return pred.copy()
    keep = KeepLargestConnectedComponent(
        applied_labels=list(STRUCTURE_LABELS), independent=method == "structures"
    )
    out = np.empty_like(pred)
    for i, mask in enumerate(pred):
        out[i] = np.asarray(keep(torch.from_numpy(mask[None].astype(np.int64))))[0]
    return out


def choose(
    pred: np.ndarray, score: Callable[[np.ndarray], float]
) -> tuple[Method, dict[Method, float]]:
    """The method with the highest ``score`` (e.g. validation Dice) of ``pred``, and every score.

    ``none`` wins ties: a clean-up must earn its place.
    """
    scores = {method: float(score(postprocess(pred, method))) for method in METHODS}
    best = max(METHODS, key=lambda m: (scores[m], m == "none"))
    return best, scores
