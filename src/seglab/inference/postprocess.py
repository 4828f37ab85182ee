"""Connected-component clean-up of predicted label maps, chosen on the validation split.

A 2D segmenter sees one slice at a time, so it can leave islands: a few RV pixels in an apical
slice, a blob of "LV" in the liver. Each island costs a whole slice's Dice for that structure (a
false positive counts 0) and makes the mask anatomically invalid. As nnU-Net does, the clean-up
is a choice measured on the validation split, never assumed: :func:`choose` keeps a method only
when it raises the validation Dice.

Two steps on each slice, then one across slices (a :class:`Cleanup`): first every region of a
structure smaller than ``min_pixels`` is dropped (most false positives on slices beyond the base
or the apex are a few dozen pixels), then one of the methods (MONAI's
``KeepLargestConnectedComponent``):

- ``none``: nothing more;
- ``heart``: keep the largest connected region of the foreground as a whole (any label),
  dropping everything detached from the heart;
- ``structures``: keep the largest connected region of each label separately;

then, with ``across_slices``, each volume's slices are stacked and only the largest 3D region
of each structure is kept: a structure on a slice that touches none of its regions on the
neighbouring slices goes (a 2D network cannot see that; nnU-Net's clean-up is 3D likewise).

Dropped pixels become background. :func:`choose` tries every method with every size in
:data:`MIN_PIXELS`, with and without the step across slices.

>>> import numpy as np
>>> mask = np.zeros((1, 8, 8), np.uint8); mask[0, 1:4, 1:4] = 3; mask[0, 6, 6] = 1
>>> int(Cleanup("heart").apply(mask).sum() // 3)
9
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

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


def keep_largest_across_slices(pred: np.ndarray, volumes: Sequence[np.ndarray]) -> np.ndarray:
    """``pred`` with, in each volume (its rows in slice order), only the largest 3D connected
    region of each structure kept, slices stacked (26-connected; a new array)."""
    out = pred.copy()
    keep = KeepLargestConnectedComponent(applied_labels=list(STRUCTURE_LABELS), independent=True)
    for rows in volumes:
        stack = torch.from_numpy(out[rows][None].astype(np.int64))
        out[rows] = np.asarray(keep(stack))[0]
    return out


@dataclass(frozen=True)
class Cleanup:
    """One clean-up of predictions, as chosen on validation and stored with a segmenter.

    Args:
        method: the step on each slice (``none``, ``heart``, ``structures``).
        min_pixels: regions of a structure below this size are dropped first (0: none).
        across_slices: keep the largest 3D region of each structure in each volume.
    """

    method: Method = "none"
    min_pixels: int = 0
    across_slices: bool = False

    #: Stored as a segmenter's hyper-parameters and as its run's tags, under these names.
    KEYS = ("postprocess", "min_pixels", "across_slices")
    TAGS = ("postprocess", "postprocess_min_pixels", "postprocess_across_slices")

    def apply(self, pred: np.ndarray, volumes: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """``pred`` uint8 ``[N, H, W]`` cleaned (a new array); ``volumes`` (each volume's rows
        in slice order) is needed only ``across_slices``."""
        out = postprocess(pred, self.method, self.min_pixels)
        if not self.across_slices:
            return out
        if volumes is None:
            raise ValueError("a clean-up across slices needs the slices' volumes")
        return keep_largest_across_slices(out, volumes)

    @property
    def name(self) -> str:
        """``<method>_min<pixels>``, ``_3d`` appended across slices: the key of its score."""
        return f"{self.method}_min{self.min_pixels}" + ("_3d" if self.across_slices else "")

    def describe(self) -> str:
        text = f"{self.method}, regions >= {self.min_pixels} px"
        return text + (", largest 3D region" if self.across_slices else "")

    def hparams(self) -> dict[str, Any]:
        return dict(zip(self.KEYS, (self.method, self.min_pixels, self.across_slices), strict=True))

    def tags(self) -> dict[str, str]:
        values = (self.method, self.min_pixels, self.across_slices)
        return {key: str(value) for key, value in zip(self.TAGS, values, strict=True)}

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> Cleanup:
        """The clean-up a checkpoint stores (none before the choice existed; the step across
        slices off before it existed)."""
        return cls(
            hparams.get("postprocess", "none"),
            int(hparams.get("min_pixels", 0)),
            bool(hparams.get("across_slices", False)),
        )

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Cleanup:
        """The clean-up a registered segmenter's training run recorded in its tags."""
        return cls(
            tags.get("postprocess", "none"),  # type: ignore[arg-type]
            int(tags.get("postprocess_min_pixels", 0)),
            tags.get("postprocess_across_slices", "False") == "True",
        )


def choose(
    pred: np.ndarray,
    score: Callable[[np.ndarray], float],
    volumes: Sequence[np.ndarray] | None = None,
) -> tuple[Cleanup, dict[str, float]]:
    """The :class:`Cleanup` with the highest ``score`` (e.g. validation Dice) of ``pred``, and
    every score, keyed by :attr:`Cleanup.name`; with ``volumes`` (each volume's rows in slice
    order) every clean-up is tried with and without the step across slices.

    Ties go to the simpler clean-up (``none`` first, then the smaller size, then per slice
    only): a clean-up must earn its place.
    """
    scores: dict[str, float] = {}
    best: tuple[float, int, int, int, Cleanup] | None = None
    across = (False, True) if volumes is not None else (False,)
    for rank, method in enumerate(METHODS):
        for size in MIN_PIXELS:
            cleaned = postprocess(pred, method, size)
            for three_d in across:
                cleanup = Cleanup(method, size, three_d)
                out = keep_largest_across_slices(cleaned, volumes) if three_d else cleaned
                value = float(score(out))
                scores[cleanup.name] = value
                if best is None or (value, -rank, -size, -three_d) > best[:4]:
                    best = (value, -rank, -size, -three_d, cleanup)
    assert best is not None
    return best[4], scores
