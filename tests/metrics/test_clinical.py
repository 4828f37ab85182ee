"""Clinical indices: volumes from voxel counts, EF, myocardial mass; errors over patients."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seglab.metrics.clinical import INDICES, clinical_errors, clinical_indices


@pytest.mark.realdata
def test_patient001_by_hand(acdc_real: Path) -> None:
    folder = acdc_real / "database" / "training" / "patient001"
    assert (
        "ED: 1" in (folder / "Info.cfg").read_text()
        and "ES: 12" in (folder / "Info.cfg").read_text()
    )
    ed_image = nib.load(str(folder / "patient001_frame01_gt.nii.gz"))
    es_image = nib.load(str(folder / "patient001_frame12_gt.nii.gz"))
    ed, es = np.asanyarray(ed_image.dataobj), np.asanyarray(es_image.dataobj)
    zooms = ed_image.header.get_zooms()
    assert zooms == pytest.approx((1.5625, 1.5625, 10.0))
    voxel_ml = 1.5625 * 1.5625 * 10.0 / 1000.0  # mm^3 -> ml

    lv_edv, lv_esv = (ed == 3).sum() * voxel_ml, (es == 3).sum() * voxel_ml
    rv_edv, rv_esv = (ed == 1).sum() * voxel_ml, (es == 1).sum() * voxel_ml
    got = clinical_indices(ed, es, zooms)
    assert got["lv_edv_ml"] == pytest.approx(lv_edv)
    assert got["lv_esv_ml"] == pytest.approx(lv_esv)
    assert got["lv_ef_pct"] == pytest.approx((lv_edv - lv_esv) / lv_edv * 100)
    assert got["rv_edv_ml"] == pytest.approx(rv_edv)
    assert got["rv_esv_ml"] == pytest.approx(rv_esv)
    assert got["rv_ef_pct"] == pytest.approx((rv_edv - rv_esv) / rv_edv * 100)
    assert got["myo_mass_g"] == pytest.approx((ed == 2).sum() * voxel_ml * 1.05)
    # The figures themselves (a dilated cardiomyopathy: large LV, low LV EF).
    assert got["lv_edv_ml"] == pytest.approx(295.51, abs=0.01)
    assert got["lv_esv_ml"] == pytest.approx(225.61, abs=0.01)
    assert got["lv_ef_pct"] == pytest.approx(23.65, abs=0.01)
    assert got["rv_edv_ml"] == pytest.approx(139.72, abs=0.01)
    assert got["rv_esv_ml"] == pytest.approx(59.55, abs=0.01)
    assert got["rv_ef_pct"] == pytest.approx(57.38, abs=0.01)
    assert got["myo_mass_g"] == pytest.approx(172.47, abs=0.01)


def test_synthetic_volumes_and_units() -> None:
    ed = np.zeros((20, 20, 10), np.uint8)
    es = np.zeros_like(ed)
    ed[:10, :10, :5] = 3  # 500 voxels of 2 x 1 x 5 mm = 5 ml
    es[:5, :10, :5] = 3  # 2.5 ml
    ed[10:, 10:, :2] = 2  # 200 voxels = 2 ml of MYO -> 2.1 g
    got = clinical_indices(ed, es, (2.0, 1.0, 5.0))
    assert got["lv_edv_ml"] == pytest.approx(5.0)
    assert got["lv_esv_ml"] == pytest.approx(2.5)
    assert got["lv_ef_pct"] == pytest.approx(50.0)
    assert got["myo_mass_g"] == pytest.approx(2.1)
    assert got["rv_edv_ml"] == 0.0 and math.isnan(got["rv_ef_pct"])  # no RV: EF undefined
    assert tuple(got) == INDICES


def test_bad_input() -> None:
    volume = np.zeros((4, 4, 2), np.uint8)
    with pytest.raises(ValueError, match="3D"):
        clinical_indices(volume[..., 0], volume, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        clinical_indices(volume, volume, (1.0, 1.0))


def test_errors_over_patients() -> None:
    truth = {
        "p1": dict.fromkeys(INDICES, 100.0),
        "p2": dict.fromkeys(INDICES, 50.0),
    }
    predicted = {
        "p1": {**truth["p1"], "lv_edv_ml": 110.0, "lv_ef_pct": 95.0},
        "p2": {**truth["p2"], "lv_edv_ml": 45.0},
    }
    result = clinical_errors(predicted, truth)
    frame = result.per_patient
    assert list(frame.index) == ["p1", "p2"]
    assert frame.loc["p1", "lv_edv_ml_error"] == 10.0
    assert frame.loc["p2", "lv_edv_ml_error"] == -5.0
    assert frame.loc["p2", "lv_edv_ml_abs_error"] == 5.0
    assert frame.loc["p2", "lv_edv_ml_rel_error_pct"] == pytest.approx(10.0)
    assert result.mean_absolute_error["lv_edv_ml_mae"] == pytest.approx(7.5)
    assert result.mean_absolute_error["lv_ef_pct_mae"] == pytest.approx(2.5)
    assert result.mean_absolute_error["myo_mass_g_mae"] == 0.0
    with pytest.raises(ValueError, match="p2"):
        clinical_errors({"p1": predicted["p1"]}, truth)
    with pytest.raises(ValueError, match="no patients"):
        clinical_errors({}, {})
