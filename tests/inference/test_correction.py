"""Applying a corrector, plausibility and the gate, on generated hearts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglab.config import GateParams, NvaeParams
from seglab.data.labels import RV
from seglab.data.phantom.masks import heart_masks
from seglab.inference.correction import correct, gate, mask_agreement, plausibility
from seglab.models.nvae import Nvae

SIZE = 32


def hearts(n: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, SIZE, SIZE]: an LV disc in a MYO ring, an RV crescent beside it."""
    return heart_masks(n, SIZE, seed)


def tiny(in_channels: int) -> Nvae:
    params = NvaeParams(
        in_channels=in_channels,
        stem_channels=2,
        preprocess_blocks=1,
        groups_per_scale=(1, 1),
        latent_channels=2,
        beta=(1.0, 1.0),
    )
    torch.manual_seed(0)
    return Nvae(**params.network(), image_size=SIZE).eval()


def test_agreement_is_one_for_equal_masks_and_for_two_empty_ones() -> None:
    masks = hearts(3)
    empty = np.zeros_like(masks)
    np.testing.assert_allclose(mask_agreement(masks, masks), 1.0)
    np.testing.assert_allclose(mask_agreement(empty, empty), 1.0)
    np.testing.assert_allclose(mask_agreement(masks, empty), 0.0)


def test_agreement_averages_the_structures_present() -> None:
    a = hearts(1)
    b = a.copy()
    b[b == RV] = 0  # RV lost: Dice 0 for RV, 1 for MYO and LV
    assert mask_agreement(a, b)[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        mask_agreement(a, b[:, :-1])


@pytest.mark.parametrize(("in_channels", "shape"), [(4, (5, SIZE, SIZE)), (12, (5, 3, SIZE, SIZE))])
def test_correct_returns_one_label_map_per_slice(in_channels: int, shape: tuple[int, ...]) -> None:
    labels = np.broadcast_to(hearts(5).reshape(5, 1, SIZE, SIZE), (5, 3, SIZE, SIZE))
    labels = labels[:, 1] if len(shape) == 3 else np.ascontiguousarray(labels)
    out = correct(tiny(in_channels), labels, batch_size=2)
    assert out.shape == (5, SIZE, SIZE) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 1, 2, 3}
    scores = plausibility(tiny(4), hearts(5), batch_size=2)
    assert scores.shape == (5,) and ((scores >= 0) & (scores <= 1)).all()


def test_gate_takes_the_correction_only_where_it_is_earned() -> None:
    before, after = hearts(4, seed=1), hearts(4, seed=2)
    valid_before = np.array([True, False, False, True])
    valid_after = np.array([True, True, False, False])
    plausible = np.array([0.95, 0.95, 0.95, 0.5])
    out = gate(before, after, valid_before, valid_after, plausible, GateParams())
    # slice 1: valid only after; slice 3: implausible input; slices 0 and 2 keep the input.
    assert out.taken.tolist() == [False, True, False, True]
    assert out.by_validity.tolist() == [False, True, False, False]
    assert out.by_plausibility.tolist() == [False, False, False, True]
    for i, taken in enumerate(out.taken):
        np.testing.assert_array_equal(out.labels[i], after[i] if taken else before[i])
    # An emptied heart is "valid" (it breaks no criterion) but never earns the swap.
    erased = gate(before, np.zeros_like(after), valid_before, [True] * 4, [1.0] * 4, GateParams())
    assert not erased.taken.any()
    off = gate(
        before,
        after,
        valid_before,
        valid_after,
        plausible,
        GateParams(validity=False, plausibility_below=None),
    )
    assert not off.taken.any()
    np.testing.assert_array_equal(off.labels, before)


def test_gate_never_takes_an_emptied_correction_even_for_an_implausible_input() -> None:
    """The quick profile's collapsed NVAE: the correction is all background, and the NVAE of
    ground-truth masks (background everywhere too) scores a perfect heart plausibility 0."""
    before = hearts(3, seed=3)
    before[2] = 0  # an empty input: emptying it again erases nothing
    after = np.zeros_like(before)
    out = gate(before, after, [True, False, True], [True] * 3, [0.0, 0.0, 1.0], GateParams())
    assert out.emptied.tolist() == [True, True, False]
    assert not out.taken.any()
    assert not out.by_plausibility.any() and not out.by_validity.any()
    np.testing.assert_array_equal(out.labels, before)
    # Only plausibility on: still never taken.
    only = gate(before, after, [False] * 3, [True] * 3, [0.0] * 3, GateParams(validity=False))
    assert not only.taken[:2].any()
