"""Connected-component clean-up: what each method keeps, and that val must earn a method."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.data.labels import LV, MYO, RV
from seglab.inference.postprocess import METHODS, MIN_PIXELS, choose, drop_small, postprocess


def _mask() -> np.ndarray:
    """One slice: an LV inside a MYO ring, an RV beside it, a detached RV island and LV speck."""
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[0, 8:20, 8:20] = MYO
    mask[0, 11:17, 11:17] = LV
    mask[0, 8:20, 20:26] = RV
    mask[0, 28:30, 2:4] = RV  # island far from the heart
    mask[0, 2, 28] = LV  # speck
    return mask


def test_heart_keeps_the_largest_foreground_region_whatever_its_labels() -> None:
    out = postprocess(_mask(), "heart")
    assert out[0, 28:30, 2:4].max() == 0 and out[0, 2, 28] == 0
    assert (out[0, 8:20, 8:26] == _mask()[0, 8:20, 8:26]).all()


def test_structures_keeps_the_largest_region_of_each_label() -> None:
    mask = _mask()
    mask[0, 0:3, 0:3] = MYO  # a second MYO region, smaller than the ring
    out = postprocess(mask, "structures")
    assert out[0, 0:3, 0:3].max() == 0 and out[0, 28:30, 2:4].max() == 0 and out[0, 2, 28] == 0
    assert (out[0, 8:20, 8:26] == mask[0, 8:20, 8:26]).all()


def test_none_is_a_copy_and_unknown_methods_are_refused() -> None:
    mask = _mask()
    out = postprocess(mask, "none")
    assert (out == mask).all() and out is not mask
    with pytest.raises(ValueError, match="unknown post-processing 'open'"):
        postprocess(mask, "open")  # type: ignore[arg-type]


def test_drop_small_removes_regions_below_the_size_of_each_structure() -> None:
    mask = _mask()
    out = drop_small(mask, 5)  # the 4-pixel RV island and the 1-pixel LV speck go
    assert out[0, 28:30, 2:4].max() == 0 and out[0, 2, 28] == 0
    assert (out[0, 8:20, 8:26] == mask[0, 8:20, 8:26]).all()
    kept = drop_small(mask, 4)  # regions below 4 pixels: the speck only
    assert (kept[0, 28:30, 2:4] == RV).all() and kept[0, 2, 28] == 0
    assert (drop_small(mask, 0) == mask).all()


def test_choose_takes_the_best_score_and_the_simplest_on_ties() -> None:
    mask = _mask()
    truth = postprocess(mask, "heart")
    (method, size), scores = choose(mask, lambda p: float((p == truth).mean()))
    assert len(scores) == len(METHODS) * len(MIN_PIXELS)
    assert (method, size) in (("none", 10), ("heart", 0))  # both clean the two specks
    assert scores[f"{method}_min{size}"] == 1.0 > scores["none_min0"]
    assert choose(mask, lambda p: 0.5)[0] == ("none", 0)
