"""Connected-component clean-up: what each method keeps, across slices too, and that val must
earn a method."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.data.labels import LV, MYO, RV
from seglab.inference.postprocess import (
    METHODS,
    MIN_PIXELS,
    Cleanup,
    choose,
    drop_small,
    keep_largest_across_slices,
    postprocess,
)


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
    cleanup, scores = choose(mask, lambda p: float((p == truth).mean()))
    assert len(scores) == len(METHODS) * len(MIN_PIXELS)
    assert cleanup in (Cleanup("none", 10), Cleanup("heart", 0))  # both clean the two specks
    assert scores[cleanup.name] == 1.0 > scores["none_min0"]
    assert choose(mask, lambda p: 0.5)[0] == Cleanup()


def _stack() -> tuple[np.ndarray, list[np.ndarray]]:
    """Two volumes of three slices (rows shuffled): an RV through the middle slices of the
    first, and on its last slice an RV region that touches none of them."""
    stack = np.zeros((6, 16, 16), np.uint8)
    stack[[0, 1], 4:10, 4:10] = RV
    stack[2, 12:15, 12:15] = RV  # detached from the RV on the neighbouring slice
    stack[[3, 4, 5], 2:6, 2:6] = LV  # the second volume: one LV through all three slices
    return stack, [np.array([1, 0, 2]), np.array([5, 3, 4])]


def test_across_slices_keeps_the_largest_3d_region_of_each_structure() -> None:
    stack, volumes = _stack()
    out = keep_largest_across_slices(stack, volumes)
    assert out[2].max() == 0  # the detached RV goes, though on its own slice it is the largest
    assert (out[[0, 1, 3, 4, 5]] == stack[[0, 1, 3, 4, 5]]).all()
    assert (postprocess(stack, "structures") == stack).all()  # slice by slice it stays
    assert (Cleanup("structures", across_slices=True).apply(stack, volumes) == out).all()
    with pytest.raises(ValueError, match="needs the slices' volumes"):
        Cleanup(across_slices=True).apply(stack)


def test_choose_tries_each_clean_up_across_slices_when_it_has_the_volumes() -> None:
    stack, volumes = _stack()
    truth = keep_largest_across_slices(stack, volumes)
    cleanup, scores = choose(stack, lambda p: float((p == truth).mean()), volumes)
    assert len(scores) == len(METHODS) * len(MIN_PIXELS) * 2
    assert cleanup == Cleanup("none", 0, across_slices=True)
    assert scores["none_min0_3d"] == 1.0 > scores["none_min0"]


def test_a_clean_up_travels_as_hyper_parameters_and_as_tags() -> None:
    cleanup = Cleanup("heart", 20, across_slices=True)
    assert Cleanup.from_hparams(cleanup.hparams()) == cleanup
    assert Cleanup.from_tags(cleanup.tags()) == cleanup
    assert Cleanup.from_hparams({}) == Cleanup.from_tags({}) == Cleanup()  # older models
    assert Cleanup.from_hparams({"postprocess": "heart", "min_pixels": 10}) == Cleanup("heart", 10)
    assert cleanup.describe() == "heart, regions >= 20 px, largest 3D region"
