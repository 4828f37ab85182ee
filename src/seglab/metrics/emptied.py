"""Emptied masks: all background where the reference (the input being corrected, or the ground
truth) shows a heart.

An all-background mask breaks none of the 16 criteria of :mod:`seglab.metrics.anatomy` (a
criterion about an absent structure never fails), so by the criteria alone erasing a heart
"repairs" every slice: a collapsed NVAE that decodes everything to background scores validity
1.0. Erasing a heart is no valid segmentation. This layer sits on top of the criteria and
judges a mask against its reference:

* :func:`emptied`: per slice, the mask is all background and a reference is not;
* :func:`check_against`: the criteria, with every emptied slice invalid and counted apart
  (:class:`ValidityResult`, an :class:`~seglab.metrics.anatomy.AnatomyResult` whose
  ``valid`` excludes them);
* :func:`emptied_figures`: the report keys ``emptied`` (slices) and ``emptied_fraction`` (of
  the slices whose reference shows a heart).

Which reference: the ground truth wherever it is known (the reports; removing a false positive
from a slice whose ground truth is empty is then a correct fix, not an erasure), the input
mask where it is not (the gate, ``seglab correct``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seglab.data.labels import BACKGROUND
from seglab.metrics.anatomy import AnatomyResult, check_slices

EMPTIED = "emptied"
EMPTIED_FRACTION = "emptied_fraction"
#: The keys every report adds next to ``anatomical_validity``.
EMPTIED_KEYS = (EMPTIED, EMPTIED_FRACTION)


def has_heart(masks: np.ndarray) -> np.ndarray:
    """bool [N]: the slice holds any foreground label."""
    masks = np.asarray(masks)
    return (masks != BACKGROUND).reshape(len(masks), -1).any(axis=1)


def _references(masks: np.ndarray, references: Sequence[np.ndarray]) -> np.ndarray:
    """bool [N]: some reference shows a heart on the slice."""
    if not references:
        raise ValueError("emptied: give at least one reference (input or ground truth)")
    hearts = np.zeros(len(masks), dtype=bool)
    for reference in references:
        reference = np.asarray(reference)
        if reference.shape != masks.shape:
            raise ValueError(
                f"emptied: reference shape {reference.shape} differs from the masks' {masks.shape}"
            )
        hearts |= has_heart(reference)
    return hearts


def emptied(masks: np.ndarray, *references: np.ndarray) -> np.ndarray:
    """bool [N]: ``masks[i]`` is all background where some reference slice is not."""
    masks = np.asarray(masks)
    return _references(masks, references) & ~has_heart(masks)


@dataclass(frozen=True)
class ValidityResult(AnatomyResult):
    """The criteria of a set of masks judged against their references: an emptied slice breaks
    no criterion (``errors`` stays the criteria's) but is never ``valid``."""

    emptied: np.ndarray = field(kw_only=True)
    """bool [N]: the mask is all background where its reference shows a heart."""
    hearts: np.ndarray = field(kw_only=True)
    """bool [N]: the reference shows a heart (the slices a mask can empty)."""

    @property
    def valid(self) -> np.ndarray:
        """bool [N]: no criterion fails and the mask does not erase the reference's heart."""
        return ~self.errors.any(axis=1) & ~self.emptied

    def failed(self, index: int) -> list[str]:
        """The criteria slice ``index`` fails, and ``emptied`` when it erased the heart."""
        return super().failed(index) + ([EMPTIED] if self.emptied[index] else [])

    def summary(self) -> dict[str, Any]:
        """The criteria's summary with the emptied slices invalid, plus :data:`EMPTIED_KEYS`."""
        out = super().summary()
        valid = int(self.valid.sum())
        out["anatomical_validity"] = valid / out["slices"] if out["slices"] else float("nan")
        out["valid_slices"] = valid
        return out | emptied_figures(self)

    def take(self, rows: np.ndarray) -> ValidityResult:
        """The result of the slices ``rows`` (indices or a bool mask)."""
        return ValidityResult(
            self.errors[rows], self.criteria, emptied=self.emptied[rows], hearts=self.hearts[rows]
        )


def check_against(
    masks: np.ndarray,
    references: np.ndarray | Sequence[np.ndarray],
    spacing: np.ndarray | Sequence[Sequence[float]],
    workers: int = 1,
) -> ValidityResult:
    """:func:`~seglab.metrics.anatomy.check_slices` of ``masks`` [N, H, W], with every slice
    emptied with respect to ``references`` (one [N, H, W] array or several) made invalid."""
    masks = np.asarray(masks)
    if isinstance(references, np.ndarray) and references.ndim == masks.ndim:
        references = [references]
    hearts = _references(masks, list(references))
    result = check_slices(masks, spacing, workers)
    return ValidityResult(result.errors, emptied=hearts & ~has_heart(masks), hearts=hearts)


def emptied_figures(result: ValidityResult) -> dict[str, int | float]:
    """``emptied`` (slices) and ``emptied_fraction`` (of the slices whose reference shows a
    heart; 0 when none does)."""
    count, hearts = int(result.emptied.sum()), int(result.hearts.sum())
    return {EMPTIED: count, EMPTIED_FRACTION: count / hearts if hearts else 0.0}
