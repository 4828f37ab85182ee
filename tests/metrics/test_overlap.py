"""Dice and HD95 per structure: agreement with MONAI called directly, and the absent cases."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.networks.utils import one_hot

from seglab.metrics.overlap import (
    LV,
    MYO,
    RV,
    STRUCTURE_LABELS,
    STRUCTURES,
    Case,
    overlap,
    summarize_overlap,
)

# MONAI's foreground channels are label ids 1 (RV), 2 (MYO), 3 (LV); ours are LV, MYO, RV.
MONAI_TO_OURS = [2, 1, 0]


def test_class_order_and_label_ids() -> None:
    assert STRUCTURES == ("lv", "myo", "rv")
    assert STRUCTURE_LABELS == (LV, MYO, RV) == (3, 2, 1)


def blocky_labels(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Label maps made of 4x4 blocks of random labels: structures present, absent, scattered."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(4, size=(count, size // 4, size // 4), p=[0.55, 0.15, 0.15, 0.15])
    coarse[: count // 4, :, :][coarse[: count // 4] == LV] = 0  # some slices without LV
    coarse[count // 4 : count // 2][coarse[count // 4 : count // 2] == RV] = 0
    coarse[-2] = 0  # an empty slice
    return np.kron(coarse, np.ones((1, 4, 4), dtype=np.int64)).astype(np.uint8)


def monai_reference(
    pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """MONAI's own Dice and HD95 on the one-hot tensors, reordered to LV, MYO, RV."""
    p = one_hot(torch.from_numpy(pred.astype(np.int64))[:, None], 4)
    g = one_hot(torch.from_numpy(gt.astype(np.int64))[:, None], 4)
    dice = compute_dice(p, g, include_background=False, ignore_empty=False).numpy()
    with warnings.catch_warnings():  # MONAI warns about the empty classes
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(
            p,
            g,
            include_background=False,
            percentile=95,
            spacing=[tuple(map(float, s)) for s in spacing],
        ).numpy()
    return dice[:, MONAI_TO_OURS], hd[:, MONAI_TO_OURS]


def check_against_monai(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> None:
    result = overlap(pred, gt, spacing)
    dice, hd = monai_reference(pred, gt, spacing)
    defined = result.case != Case.ABSENT_IN_BOTH
    np.testing.assert_allclose(result.dice[defined], dice[defined], rtol=1e-6)
    assert np.isnan(result.dice[~defined]).all() and (dice[~defined] == 1.0).all()
    both = result.case == Case.BOTH_PRESENT
    np.testing.assert_allclose(result.hd95[both], hd[both], rtol=1e-6)
    assert np.isnan(result.hd95[~both]).all()


def test_agrees_with_monai_on_random_masks() -> None:
    gt, pred = blocky_labels(16, seed=0), np.roll(blocky_labels(16, seed=1), 2, axis=0)
    spacing = np.random.default_rng(2).uniform(0.5, 2.5, (16, 2))
    result = overlap(pred, gt, spacing)
    assert {Case(c) for c in np.unique(result.case)} == set(Case)  # every case occurs
    check_against_monai(pred, gt, spacing)


@pytest.mark.realdata
def test_agrees_with_monai_on_real_slices(acdc_real: Path) -> None:
    folder = acdc_real / "database" / "training" / "patient001"
    ed = nib.load(str(folder / "patient001_frame01_gt.nii.gz"))
    es = nib.load(str(folder / "patient001_frame12_gt.nii.gz"))
    gt = np.moveaxis(np.asanyarray(ed.dataobj), 2, 0)[:5]  # MONAI's own HD is slow: 5 slices
    pred = np.moveaxis(np.asanyarray(es.dataobj), 2, 0)[:5]  # ES masks as a "prediction" of ED
    spacing = np.tile(ed.header.get_zooms()[:2], (len(gt), 1))
    check_against_monai(pred, gt, spacing)
    result = overlap(pred, gt, spacing)
    assert result.case[0].tolist() == [Case.ABSENT_IN_BOTH] * 3  # patient001's empty slice 0
    assert np.nanmin(result.hd95) > 0


def test_absent_cases_are_coded_and_kept_out_of_means() -> None:
    gt = np.zeros((4, 20, 20), np.uint8)
    pred = np.zeros_like(gt)
    gt[0, 5:10, 5:10] = pred[0, 5:10, 5:10] = LV  # LV in both: perfect
    pred[1, 5:10, 5:10] = LV  # LV predicted, absent in gt
    gt[2, 5:10, 5:10] = LV  # LV in gt, missed
    pred[0, 12:15, 12:15] = RV  # slice 0 also has a false-positive RV
    result = overlap(pred, gt, (1.0, 1.0))
    assert result.case[:, 0].tolist() == [
        Case.BOTH_PRESENT,
        Case.ABSENT_IN_GT,
        Case.ABSENT_IN_PRED,
        Case.ABSENT_IN_BOTH,
    ]
    assert result.dice_lv[:3].tolist() == [1.0, 0.0, 0.0] and math.isnan(result.dice_lv[3])
    assert result.hd95_lv[0] == 0.0 and np.isnan(result.hd95_lv[1:]).all()
    assert result.case[0].tolist() == [Case.BOTH_PRESENT, Case.ABSENT_IN_BOTH, Case.ABSENT_IN_GT]
    # slice 0: mean over LV (1) and RV (0); MYO, absent in both, does not count
    assert result.dice_mean[0] == pytest.approx(0.5)
    assert result.dice_mean[1:3].tolist() == [0.0, 0.0] and math.isnan(result.dice_mean[3])
    assert result.hd95_mean[0] == 0.0 and math.isnan(result.hd95_mean[1])
    assert result.empty_gt.tolist() == [False, True, False, True]
    assert result.empty_pred.tolist() == [False, False, True, True]

    summary = summarize_overlap(result)
    assert summary["dice_lv"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3; slice 3 excluded
    assert summary["dice_rv"] == 0.0 and math.isnan(summary["dice_myo"])
    assert summary["dice_mean"] == pytest.approx((1 / 3 + 0.0) / 2)
    assert summary["hd95_lv"] == 0.0 and summary["hd95_mean"] == 0.0
    assert (summary["lv_both_present"], summary["lv_absent_in_gt"]) == (1, 1)
    assert (summary["lv_absent_in_pred"], summary["lv_absent_in_both"]) == (1, 1)
    assert summary["myo_absent_in_both"] == 4 and summary["rv_absent_in_gt"] == 1
    assert summary["empty_gt_slices"] == 2
    assert summary["empty_gt_slices_pred_empty"] == 1
    assert summary["empty_gt_slices_pred_nonempty"] == 1
    frame = result.to_frame()
    assert frame.loc[1, "case_lv"] == "absent_in_gt" and len(frame) == 4


def test_hd95_is_in_mm_of_each_slice_anisotropic_spacing() -> None:
    gt = np.zeros((3, 40, 40), np.uint8)
    gt[:, 10:20, 10:20] = MYO
    pred = np.zeros_like(gt)
    pred[0, 13:23, 10:20] = MYO  # 3 pixels along axis 0
    pred[1, 10:20, 13:23] = MYO  # 3 pixels along axis 1
    pred[2, 10:20, 13:23] = MYO
    result = overlap(pred, gt, np.array([[2.0, 0.5], [2.0, 0.5], [1.0, 4.0]]))
    assert result.hd95_myo.tolist() == pytest.approx([6.0, 1.5, 12.0])
    assert result.dice_myo == pytest.approx([0.7, 0.7, 0.7])


def test_one_hot_and_torch_inputs() -> None:
    gt, pred = blocky_labels(6, seed=3), blocky_labels(6, seed=4)
    expected = overlap(pred, gt, (1.0, 1.5))
    pred_1h = np.eye(4, dtype=np.float32)[pred].transpose(0, 3, 1, 2)
    gt_1h = torch.from_numpy(np.eye(4, dtype=np.float32)[gt].transpose(0, 3, 1, 2))
    got = overlap(pred_1h, gt_1h, (1.0, 1.5))
    np.testing.assert_array_equal(got.dice, expected.dice)
    np.testing.assert_array_equal(got.hd95, expected.hd95)
    np.testing.assert_array_equal(got.case, expected.case)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        overlap(np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 9), np.uint8), (1.0, 1.0))
    with pytest.raises(ValueError, match="0..3"):
        overlap(np.full((1, 8, 8), 4), np.zeros((1, 8, 8), np.uint8), (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        overlap(np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        overlap(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), (1.0, 1.0))


def test_without_hd95_the_dice_is_the_same_and_no_distance_is_computed() -> None:
    gen = np.random.default_rng(1)
    pred, gt = gen.integers(0, 4, (4, 16, 16)), gen.integers(0, 4, (4, 16, 16))
    full, dice_only = overlap(pred, gt, (1.0, 1.0)), overlap(pred, gt, (1.0, 1.0), hd95=False)
    assert np.array_equal(full.dice, dice_only.dice, equal_nan=True)
    assert not np.isnan(full.hd95).all() and np.isnan(dice_only.hd95).all()
