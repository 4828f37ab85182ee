"""Validation overlap per epoch: the study's convention, never rewarding an empty prediction."""

from __future__ import annotations

import pytest
import torch

from seglab.training.scores import EpochOverlap, slice_scores

CLASSES = [1, 2, 3]  # RV, MYO, LV


def test_scores_per_slice() -> None:
    target = torch.zeros(2, 4, 4, dtype=torch.uint8)
    target[:, :2] = 3  # 8 LV pixels per slice
    pred = target.clone()
    pred[1, 0] = 0  # slice 1: 4 of the 8 LV pixels predicted
    dice, iou, accuracy = slice_scores(pred, target, CLASSES, 4)
    lv = CLASSES.index(3)
    assert dice[0, lv] == pytest.approx(1.0) and dice[1, lv] == pytest.approx(2 * 4 / (4 + 8))
    assert iou[1, lv] == pytest.approx(4 / 8)
    assert torch.isnan(dice[:, CLASSES.index(1)]).all()  # RV in neither: left out
    assert accuracy.tolist() == pytest.approx([1.0, 12 / 16])


def test_an_empty_prediction_scores_zero_whatever_the_batches() -> None:
    target = torch.zeros(6, 4, 4, dtype=torch.uint8)
    target[:2, :2] = 3  # LV on 2 of 6 slices, nothing on the other 4
    overlap = EpochOverlap(CLASSES, 4)
    for part in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven batches
        overlap.add(torch.zeros_like(target[part]), target[part])
    scores = overlap.compute(lambda t: t)
    assert scores["dice"][CLASSES.index(3)] == 0.0  # empty-vs-empty slices do not count as 1
    assert torch.isnan(scores["dice"][CLASSES.index(1)])  # never present


def test_the_epoch_figure_is_the_mean_over_slices_not_over_batches() -> None:
    target = torch.full((3, 2, 2), 3, dtype=torch.uint8)
    pred = target.clone()
    pred[2] = 0  # slice 2 misses its LV
    overlap = EpochOverlap(CLASSES, 4)
    overlap.add(pred[:2], target[:2])  # batch of 2: Dice 1, 1
    overlap.add(pred[2:], target[2:])  # batch of 1: Dice 0
    assert overlap.compute(lambda t: t)["dice"][CLASSES.index(3)] == pytest.approx(2 / 3)
