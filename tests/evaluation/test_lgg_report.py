"""LGG figures on constructed masks: per-slice and per-volume overlap, empty slices apart,
timed prediction, the prediction figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seglab.evaluation.lgg_comparison import KEYS
from seglab.evaluation.lgg_report import (
    predict_timed,
    prediction_figure,
    slice_scores,
    summarize,
    volume_scores,
)

S = 8


def _mask(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((S, S), np.uint8)
    mask[rows, cols] = 1
    return mask


EMPTY = np.zeros((S, S), np.uint8)


@pytest.fixture
def case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient A: a perfect slice, a half-overlap slice, a true-negative slice.
    Patient B: a false positive on an empty slice, a missed tumour."""
    gt = np.stack(
        [
            _mask(slice(0, 2), slice(0, 2)),  # A0: 4 px
            _mask(slice(0, 2), slice(0, 4)),  # A1: 8 px
            EMPTY,  # A2
            EMPTY,  # B0
            _mask(slice(4, 8), slice(4, 8)),  # B1: 16 px
        ]
    )
    pred = np.stack(
        [
            _mask(slice(0, 2), slice(0, 2)),  # exact
            _mask(slice(0, 2), slice(0, 2)),  # 4 of 8: IoU 0.5, Dice 2*4/12
            EMPTY,  # true negative
            _mask(slice(0, 1), slice(0, 2)),  # 2 px false positive
            EMPTY,  # missed
        ]
    )
    patients = np.array(["A", "A", "A", "B", "B"])
    return pred, gt, patients


def test_per_slice_iou_dice_and_true_negatives_left_out(case: tuple) -> None:
    pred, gt, _ = case
    scores = slice_scores(pred, gt)
    assert list(scores.columns) == ["iou", "dice", "accuracy", "tumour", "predicted"]
    assert scores["iou"].tolist()[:2] == pytest.approx([1.0, 0.5])
    assert math.isnan(scores["iou"][2]) and math.isnan(scores["dice"][2])
    assert scores["iou"][3] == 0.0 and scores["iou"][4] == 0.0
    assert scores["dice"][1] == pytest.approx(8 / 12)
    assert scores["accuracy"].tolist() == pytest.approx([1, 60 / 64, 1, 62 / 64, 48 / 64])
    assert scores["tumour"].tolist() == [True, True, False, False, True]
    assert scores["predicted"].tolist() == [True, True, False, True, False]


def test_per_volume_overlap_is_3d_not_the_mean_of_slices(case: tuple) -> None:
    pred, gt, patients = case
    volumes = volume_scores(pred, gt, patients)
    assert volumes["patient"].tolist() == ["A", "B"]
    assert volumes["slices"].tolist() == [3, 2]
    # A: intersection 4 + 4, union 4 + 8 -> 8/12 (the slice mean would be 0.75).
    assert volumes["iou"][0] == pytest.approx(8 / 12)
    assert volumes["dice"][0] == pytest.approx(2 * 8 / (8 + 12))
    assert volumes["iou"][1] == 0.0


def test_summary_separates_empty_slices(case: tuple) -> None:
    pred, gt, patients = case
    figures = summarize(pred, gt, patients)
    assert list(figures)[: len(KEYS)] == list(KEYS)
    assert figures["iou"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert figures["iou_tumour_slices"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert figures["dice_mean"] == pytest.approx((1 + 8 / 12 + 0 + 0) / 4)
    assert figures["iou_volume"] == pytest.approx((8 / 12 + 0) / 2)
    assert figures["accuracy"] == pytest.approx(np.mean([1, 60 / 64, 1, 62 / 64, 48 / 64]))
    assert figures["accuracy_empty_slices"] == pytest.approx((1 + 62 / 64) / 2)
    assert figures["accuracy_tumour_slices"] == pytest.approx((1 + 60 / 64 + 48 / 64) / 3)
    assert figures["empty_slices_false_positive"] == 0.5
    assert (figures["slices"], figures["tumour_slices"], figures["empty_slices"]) == (5, 3, 2)
    assert figures["patients"] == 2


def test_accuracy_is_high_on_empty_slices_whatever_the_model() -> None:
    """A model that never predicts tumour: ~97% accuracy overall, IoU 0 on tumour slices."""
    gt = np.zeros((10, 32, 32), np.uint8)
    gt[:3, 10:15, 10:15] = 1
    figures = summarize(np.zeros_like(gt), gt, ["p"] * 10)
    assert figures["accuracy"] > 0.97
    assert figures["accuracy_empty_slices"] == 1.0
    assert figures["iou_tumour_slices"] == 0.0 and figures["iou"] == 0.0


def test_all_empty_split_has_no_iou_but_perfect_empty_accuracy() -> None:
    gt = np.zeros((3, S, S), np.uint8)
    figures = summarize(gt, gt, ["p", "p", "q"])
    assert math.isnan(figures["iou"]) and math.isnan(figures["iou_volume"])
    assert math.isnan(figures["iou_tumour_slices"])
    assert figures["accuracy_empty_slices"] == 1.0
    assert figures["empty_slices_false_positive"] == 0.0


def test_bad_masks_are_refused(case: tuple) -> None:
    pred, gt, patients = case
    with pytest.raises(ValueError, match="binary"):
        slice_scores(pred * 255, gt)
    with pytest.raises(ValueError, match="differ in shape"):
        slice_scores(pred[:2], gt)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        slice_scores(pred[0], gt[0])
    with pytest.raises(ValueError, match="patient ids"):
        volume_scores(pred, gt, patients[:3])


class _Threshold(torch.nn.Module):
    """Logit = FLAIR - 0.5: a known answer for the timed prediction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:2] - 0.5


def test_timed_prediction_returns_every_mask_and_a_rate() -> None:
    images = torch.rand(7, 3, 16, 16)
    masks, rate = predict_timed(_Threshold(), images, batch_size=3, device=torch.device("cpu"))
    assert masks.dtype == np.uint8 and masks.shape == (7, 16, 16)
    np.testing.assert_array_equal(masks, (images[:, 1] > 0.5).numpy())
    assert rate > 0 and math.isfinite(rate)


def test_prediction_figure_picks_tumour_slices() -> None:
    gt = np.zeros((6, S, S), np.uint8)
    gt[[1, 4], 2:5, 2:5] = 1
    images = np.random.default_rng(0).integers(0, 255, (6, 3, S, S), dtype=np.uint8)
    fig = prediction_figure(images, gt, gt, [f"s{i}" for i in range(6)], rows=4)
    assert [ax.get_title() for ax in fig.axes] == ["s1", "s4"]
