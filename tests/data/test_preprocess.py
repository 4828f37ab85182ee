from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from seglab.config import AcdcPrepareParams
from seglab.data.acdc import open_acdc
from seglab.data.preprocess import frame_to_slices, motion_centre, one_hot, voxel_affine

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def patient001(acdc_real: Path):
    with open_acdc(acdc_real) as ds:
        yield ds.load("patient001", "ED"), ds.load("patient001", "ES")


def test_slices_have_size_spacing_and_range(patient001) -> None:
    ed, _ = patient001
    fs = frame_to_slices(ed, AcdcPrepareParams(size=128, fov_mm=200.0, crop="center"))
    assert fs.image.shape == fs.label.shape == (10, 128, 128)
    assert fs.image.dtype == np.float32 and fs.label.dtype == np.uint8
    assert fs.image.min() >= 0.0 and fs.image.max() <= 1.0
    assert set(np.unique(fs.label)) == {0, 1, 2, 3}
    assert fs.spacing == (200.0 / 128, 200.0 / 128)
    assert fs.thickness == 10.0
    assert fs.coverage > 0.999


def test_affine_uses_header_zooms(patient001) -> None:
    # ACDC sforms have a 1 mm diagonal; the zooms (1.5625) are the truth.
    ed, _ = patient001
    np.testing.assert_allclose(np.diag(voxel_affine(ed))[:3], (1.5625, 1.5625, 10.0))


def test_resampling_preserves_physical_size(patient001) -> None:
    """LV cavity area in mm^2 survives resampling to the new pixel spacing (within 3%)."""
    ed, _ = patient001
    fs = frame_to_slices(ed, AcdcPrepareParams(crop="gt"))
    native = (ed.label == 3).sum() * ed.spacing[0] * ed.spacing[1]
    resampled = (fs.label == 3).sum() * fs.spacing[0] * fs.spacing[1]
    assert abs(resampled - native) / native < 0.03


def test_motion_centre_finds_the_heart_without_ground_truth(acdc_real: Path) -> None:
    with open_acdc(acdc_real) as ds:
        for pid in ("patient001", "patient030", "patient061", "patient090"):
            ed, es = ds.load(pid, "ED"), ds.load(pid, "ES")
            cx, cy = motion_centre(ed, es)
            gx, gy, _ = ndimage.center_of_mass(ed.label > 0)
            dist_mm = np.hypot((cx - gx) * ed.spacing[0], (cy - gy) * ed.spacing[1])
            assert dist_mm < 40.0, (pid, dist_mm)
            fs = frame_to_slices(ed, AcdcPrepareParams(crop="motion"), (cx, cy))
            assert fs.coverage > 0.99, pid


def test_gt_crop_centres_the_mask(patient001) -> None:
    ed, _ = patient001
    fs = frame_to_slices(ed, AcdcPrepareParams(crop="gt"))
    fg = np.argwhere(fs.label > 0)
    centre = (fg[:, 1:].min(0) + fg[:, 1:].max(0)) / 2
    np.testing.assert_allclose(centre, (63.5, 63.5), atol=1.5)


def test_one_hot() -> None:
    labels = np.array([[[0, 1], [2, 3]]], dtype=np.uint8)
    oh = one_hot(labels)
    assert oh.shape == (1, 4, 2, 2)
    assert oh.sum(1).eq(1).all()
    assert oh[0, 3, 1, 1] == 1 and oh[0, 0, 0, 0] == 1
