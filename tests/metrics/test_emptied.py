"""Emptied masks: all background where the reference shows a heart, never valid."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.data.labels import LV
from seglab.data.phantom.masks import heart_masks
from seglab.metrics.anatomy import check_slices
from seglab.metrics.emptied import check_against, emptied

SPACING = (1.5, 1.5)


def test_an_erased_heart_passes_every_criterion_but_is_not_valid() -> None:
    hearts = heart_masks(4, 32, seed=0)
    hearts[3] = 0  # no heart in the reference: an empty mask is right there
    masks = hearts.copy()
    masks[:2] = 0  # two hearts erased
    assert check_slices(masks, SPACING).valid.all()  # the criteria alone: all "valid"

    result = check_against(masks, hearts, SPACING)
    assert result.emptied.tolist() == [True, True, False, False]
    assert result.valid.tolist() == [False, False, True, True]
    assert result.failed(0) == ["emptied"] and result.failed(2) == []
    summary = result.summary()
    assert summary["anatomical_validity"] == 0.5 and summary["valid_slices"] == 2
    assert summary["emptied"] == 2 and summary["emptied_fraction"] == pytest.approx(2 / 3)
    assert (
        summary["errors_per_criterion"]
        == check_slices(masks, SPACING).summary()["errors_per_criterion"]
    )
    part = result.take(np.array([1, 3]))
    assert part.emptied.tolist() == [True, False] and part.hearts.tolist() == [True, False]


def test_any_reference_with_a_heart_counts_and_a_partial_mask_is_not_emptied() -> None:
    truth = heart_masks(3, 32, seed=1)
    inputs = truth.copy()
    truth[2] = 0
    masks = np.zeros_like(truth)
    masks[1, 10:14, 10:14] = LV  # something left: judged by the criteria, not emptied
    assert emptied(masks, truth).tolist() == [True, False, False]
    assert emptied(masks, truth, inputs).tolist() == [True, False, True]
    assert check_against(masks, [truth, inputs], SPACING).emptied.tolist() == [True, False, True]
    assert check_against(masks, truth, SPACING).summary()["emptied_fraction"] == 0.5
    nothing = np.zeros_like(truth)
    assert check_against(nothing, nothing, SPACING).summary()["emptied_fraction"] == 0.0
    with pytest.raises(ValueError, match="reference shape"):
        emptied(masks, truth[:, :-1])
    with pytest.raises(ValueError, match="at least one reference"):
        emptied(masks)
