"""Slices of a volume and the way back: real ACDC masks and generated volumes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seglab.config import AcdcPrepareParams
from seglab.data.geometry import merge, restore, to_slices

PARAMS = AcdcPrepareParams()  # 128 x 128 at 200 mm: the training data's geometry


def read(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    nii = nib.load(path)
    zooms = nii.header.get_zooms()[:3]
    return np.asarray(nii.dataobj), (float(zooms[0]), float(zooms[1]), float(zooms[2]))


# Measured on all 200 `_gt` volumes of the ACDC training set (128 x 128, 200 mm): inside the
# footprint, 99.47% (patient038, 0.83 mm pixels) to 100% (1.5625 mm pixels, e.g. patient001) of
# voxels restore to their own label, 99.90% on average; of the foreground voxels 97.0% to 100%.
@pytest.mark.realdata
@pytest.mark.parametrize(
    ("patient", "frame", "inside_min", "foreground_min"),
    [
        ("patient001", 1, 1.0, 1.0),  # 1.5625 mm pixels: the grids coincide
        ("patient002", 1, 0.997, 0.985),  # 1.367 mm: measured 0.9977 / 0.9862
        ("patient038", 1, 0.994, 0.97),  # 0.833 mm, the finest: measured 0.9947 / 0.9703
    ],
)
def test_round_trip_of_real_masks(
    acdc_real: Path, patient: str, frame: int, inside_min: float, foreground_min: float
) -> None:
    folder = acdc_real / "database" / "training" / patient
    label, spacing = read(folder / f"{patient}_frame{frame:02d}_gt.nii.gz")
    image, _ = read(folder / f"{patient}_frame{frame:02d}.nii.gz")

    slices, geometry = to_slices(image, label, spacing, PARAMS)

    assert slices.label.shape == (label.shape[2], 128, 128) and slices.coverage == 1.0
    assert geometry.shape == label.shape and geometry.inside.shape == label.shape
    back = restore(slices.label, geometry)
    assert back.shape == label.shape and back.dtype == np.uint8
    same = back == label
    assert same[geometry.inside].mean() >= inside_min
    assert same[geometry.inside & (label > 0)].mean() >= foreground_min
    assert not back[~geometry.inside].any()  # nothing comes back outside the footprint
    assert not label[~geometry.inside].any()  # the crop holds the whole heart
    # Unchanged slices merge back bit for bit, without the resampling loss.
    np.testing.assert_array_equal(merge(label, slices.label, slices.label, geometry), label)


def heart(shape: tuple[int, int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    """A disc of LV in a ring of MYO on every slice."""
    gx, gy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    dist = np.hypot(gx - centre[0], gy - centre[1])
    disc = np.where(dist <= radius, 3, np.where(dist <= radius + 4, 2, 0)).astype(np.uint8)
    return np.repeat(disc[:, :, None], shape[2], axis=2)


def test_crop_follows_the_label_maps_heart_not_the_image_centre() -> None:
    shape = (200, 180, 4)
    label = heart(shape, (30, 150), 10)  # far from the image centre
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    params = AcdcPrepareParams(size=64, fov_mm=64.0)  # 1 mm pixels, a 64 mm crop

    slices, geometry = to_slices(image, label, (1.0, 1.0, 8.0), params)

    assert slices.coverage == 1.0
    assert (slices.label == 3).sum() == (label == 3).sum()  # same pixel size: nothing lost
    ys, xs = np.nonzero(slices.label[0])
    assert abs(ys.mean() - 31.5) <= 1 and abs(xs.mean() - 31.5) <= 1  # centred in the crop
    np.testing.assert_array_equal(restore(slices.label, geometry), label)


def test_empty_volume_is_cropped_at_the_image_centre() -> None:
    shape = (90, 70, 3)
    label = np.zeros(shape, np.uint8)
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    params = AcdcPrepareParams(size=32, fov_mm=64.0)  # 2 mm pixels

    slices, geometry = to_slices(image, label, (1.0, 1.0, 5.0), params)

    assert slices.label.shape == (3, 32, 32) and not slices.label.any()
    inside = np.argwhere(geometry.inside[:, :, 0])
    assert len(inside) == 64 * 64  # a 64 mm square of 1 mm voxels
    centre = inside.mean(axis=0)
    assert np.allclose(centre, ((shape[0] - 1) / 2, (shape[1] - 1) / 2), atol=1.0)


def test_a_given_centre_places_the_crop_without_any_label() -> None:
    shape = (200, 180, 3)
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    params = AcdcPrepareParams(size=32, fov_mm=32.0)  # 1 mm pixels

    _, geometry = to_slices(image, np.zeros(shape, np.uint8), (1.0, 1.0, 5.0), params, (40, 130))

    centre = np.argwhere(geometry.inside[:, :, 0]).mean(axis=0)
    assert np.allclose(centre, (40, 130), atol=1.5)


def test_small_volume_is_padded_and_restores_exactly() -> None:
    shape = (20, 24, 2)  # 40 x 48 mm at 2 mm: smaller than the 64 mm crop
    label = heart(shape, (10, 12), 4)
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    params = AcdcPrepareParams(size=32, fov_mm=64.0)

    slices, geometry = to_slices(image, label, (2.0, 2.0, 6.0), params)

    assert geometry.inside.all()
    np.testing.assert_array_equal(restore(slices.label, geometry), label)


def test_merge_writes_only_the_changes() -> None:
    shape = (60, 60, 3)
    label = heart(shape, (30, 30), 8)
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    params = AcdcPrepareParams(size=32, fov_mm=96.0)  # 3 mm pixels: a lossy round trip

    slices, geometry = to_slices(image, label, (1.0, 1.0, 8.0), params)
    after = slices.label.copy()
    after[1] = 0  # the middle slice corrected to background
    merged = merge(label, slices.label, after, geometry)

    assert not (restore(slices.label, geometry) == label).all()  # resampling does lose detail
    np.testing.assert_array_equal(merged[:, :, [0, 2]], label[:, :, [0, 2]])
    assert geometry.inside.all() and not merged[:, :, 1].any()  # no rim of the input is left
    after[1] = slices.label[1]
    after[1, 10:12, 10:12] = 1  # a few pixels of RV
    merged = merge(label, slices.label, after, geometry)
    np.testing.assert_array_equal(merged[:, :, 1], restore(after, geometry)[:, :, 1])
    assert (merged[:, :, 1] == 1).sum() == 6 * 6  # 2 x 2 pixels of 3 mm


def test_restore_and_merge_refuse_other_shapes() -> None:
    shape = (40, 40, 2)
    label = heart(shape, (20, 20), 5)
    slices, geometry = to_slices(
        np.random.default_rng(3).random(shape).astype(np.float32),
        label,
        (2.0, 2.0, 5.0),
        AcdcPrepareParams(size=32),
    )
    with pytest.raises(ValueError, match="expected"):
        restore(slices.label[:1], geometry)
    with pytest.raises(ValueError, match="expected"):
        merge(label[:, :, :1], slices.label, slices.label, geometry)
