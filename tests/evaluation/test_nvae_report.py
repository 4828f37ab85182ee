"""NVAE evaluation: reconstruction/sample figures on a tiny model, and the report figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from tests.helpers import tiny_nvae

from seglab.data.acdcseg import onehot
from seglab.data.labels import LV
from seglab.data.phantom.masks import heart_masks
from seglab.evaluation.nvae_report import (
    KEYS,
    evaluate_nvae,
    reconstruction_figure,
    samples_figure,
)
from seglab.inference.nvae import generate
from seglab.metrics.anatomy import check_slices
from seglab.models.nvae import Nvae
from seglab.training.nvae_module import NvaeModule

SIZE = 32
SPACING = (1.5, 1.5)


def hearts(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size] label maps: LV disc in a MYO ring, an RV crescent beside it."""
    return heart_masks(n, size, seed)


def tiny() -> Nvae:
    torch.manual_seed(0)
    return Nvae(**tiny_nvae().network(), image_size=SIZE)


def test_hearts_are_anatomically_valid() -> None:
    """The fixture itself: what the validity figures below are compared with."""
    assert check_slices(hearts(8), SPACING).valid.all()


def test_evaluate_keys_ranges_and_determinism() -> None:
    labels = hearts(6)
    x = onehot(labels)
    model = tiny()
    model.train()
    figures = evaluate_nvae(model, x, x, SPACING, samples=5, seed=3, batch_size=4)
    assert list(figures)[: len(KEYS)] == list(KEYS)
    for key in ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "anatomical_validity"):
        assert 0.0 <= figures[key] <= 1.0, key
    assert figures["target_validity"] == 1.0
    assert 0.0 <= figures["sample_validity"] <= 1.0 and figures["samples"] == 5
    assert figures["slices"] == 6
    assert model.training  # the caller's mode is restored
    again = evaluate_nvae(model, x, torch.from_numpy(labels), SPACING, samples=5, seed=3)
    assert again == pytest.approx(figures, nan_ok=True)  # labels or one-hot, any batch size


def test_empty_samples_are_not_valid_hearts() -> None:
    """A collapsed model decoding everything to background: every empty mask passes the
    criteria, but generating no heart must not score as generating valid ones."""
    model = tiny()
    with torch.no_grad():
        model.head[-1].bias.copy_(torch.tensor([1e3, 0.0, 0.0, 0.0]))
    x = onehot(hearts(4))
    figures = evaluate_nvae(model, x, x, SPACING, samples=6)
    assert figures["samples_empty"] == 6 and figures["sample_validity"] == 0.0
    assert figures["dice_mean"] == 0.0
    fig = samples_figure(generate(model, 2), SPACING, columns=2, count=2)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["empty", "empty"]


def test_emptied_reconstructions_are_not_valid_and_counted_apart() -> None:
    """The collapsed model's reconstructions erase every heart: no criterion fails, yet none
    is valid; a target without a heart cannot be emptied."""
    model = tiny()
    with torch.no_grad():
        model.head[-1].bias.copy_(torch.tensor([1e3, 0.0, 0.0, 0.0]))
    labels = hearts(4)
    labels[3] = 0  # background only: reconstructing it as background is right
    x = onehot(labels)
    figures = evaluate_nvae(model, x, x, SPACING)
    assert figures["emptied"] == 3 and figures["emptied_fraction"] == 1.0
    assert figures["anatomical_validity"] == pytest.approx(0.25)
    assert figures["target_validity"] == 1.0


def test_evaluate_without_samples_and_module_input() -> None:
    x = onehot(hearts(3))
    module = NvaeModule(tiny_nvae(), SIZE)
    figures = evaluate_nvae(module, x, x, np.full((3, 2), 1.5))
    assert "sample_validity" not in figures and "samples" not in figures
    with pytest.raises(ValueError, match="no slices"):
        evaluate_nvae(module, x[:0], x[:0], SPACING)


def test_reconstruction_figure_rows_columns_and_dice_titles() -> None:
    labels = hearts(10)
    recon = labels.copy()
    recon[:, :, : SIZE // 2] = 0  # half the heart missing: Dice well below 1
    fig = reconstruction_figure(labels, recon, captions=[f"s{i}" for i in range(10)], rows=3)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 6  # input | reconstruction, 3 rows
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("s0: input") and "Dice" in titles[1]
    assert float(titles[1].split("Dice ")[1]) < 0.9
    with_target = reconstruction_figure(labels, recon, targets=labels, rows=2)
    assert sum(bool(ax.get_title()) for ax in with_target.axes) == 6  # input | target | recon


def test_samples_figure_names_the_failed_criterion() -> None:
    samples = hearts(3)
    samples[1, 2:4, 2:4] = LV  # a second LV component far from the heart
    fig = samples_figure(samples, SPACING, columns=2, count=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "valid" and titles[2] == "valid"
    assert titles[1].startswith("disconnectivity_in_lv")
