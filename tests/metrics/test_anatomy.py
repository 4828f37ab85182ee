"""The 16 anatomical criteria: one constructed failure per criterion, a reference
implementation written directly with scipy/skimage to check the fast batched one, the
real ACDC expert masks (nearly all valid), and the same masks with a background gap opened
between LV and myocardium (all invalid)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import perimeter
from skimage.morphology import convex_hull_image

from seglab.errors import DataError
from seglab.metrics import anatomy
from seglab.metrics.anatomy import (
    CRITERIA,
    check_slice,
    check_slices,
    render_volume_report,
    volume_report,
)

SIZE, C = 128, 64
MYO_LABEL, LV_LABEL = 2, 3
YY, XX = np.mgrid[:SIZE, :SIZE]
ONE_MM = (1.0, 1.0)


def disc(cy: float, cx: float, r: float) -> np.ndarray:
    return (YY - cy) ** 2 + (XX - cx) ** 2 < r**2


def heart(lv_r: int = 12, myo_r: int = 18, rv: bool = True) -> np.ndarray:
    """A valid short-axis slice: LV disc, MYO ring, RV crescent against the ring."""
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[disc(C, C, myo_r)] = 2
    lab[disc(C, C, lv_r)] = 3
    if rv:
        lab[disc(C, C + 22, 14) & ~disc(C, C, myo_r)] = 1
    return lab


def edit(lab: np.ndarray, pixels: list[tuple[int, int]], value: int) -> np.ndarray:
    out = lab.copy()
    for y, x in pixels:
        out[y, x] = value
    return out


def diagonal_wall(beyond: int, wall: int) -> np.ndarray:
    """LV cut by the line y + x = t - 1 behind a MYO wall ``wall`` diagonal pixels thick; past
    the wall, ``beyond`` (RV, or background when 0). A 1-pixel diagonal wall is closed for
    4-connected background but lets the LV touch what lies behind it corner to corner."""
    s, t = YY + XX, 2 * C + 9
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[disc(C, C, 18) & (s <= t + wall - 1)] = 2
    lab[disc(C, C, 12) & (s <= t - 1)] = 3
    if beyond:
        lab[disc(C + 11, C + 11, 16) & (s >= t + wall) & (lab == 0)] = beyond
    return lab


def bitten_lv(centre_offset: int, radius: int) -> np.ndarray:
    """LV disc (r 14) with a bite of MYO into its left side; the MYO outline stays a disc."""
    lab = heart(lv_r=14, myo_r=20, rv=False)
    lab[(lab == 3) & disc(C, C - centre_offset, radius)] = 2
    return lab


def bar(height: int, label: int, with_myo: bool) -> np.ndarray:
    """A 61-pixel long bar of ``label``, optionally inside a 5-pixel MYO band."""
    core = np.zeros((SIZE, SIZE), bool)
    core[C - height // 2 : C - height // 2 + height, C - 30 : C + 31] = True
    lab = np.zeros((SIZE, SIZE), np.uint8)
    if with_myo:
        lab[ndimage.distance_transform_edt(~core) <= 5] = 2
    lab[core] = label
    return lab


def rv_wrapping() -> np.ndarray:
    """An RV crescent wrapped around the MYO: its concavity is 13 pixels deep."""
    lab = heart(rv=False)
    lab[disc(C, C + 16, 22) & ~disc(C, C, 18)] = 1
    return lab


def rv_at(gap_radius: int) -> np.ndarray:
    lab = heart(rv=False)
    lab[disc(C, C + 24, 14) & ~disc(C, C, gap_radius)] = 1
    return lab


def lv_spur(slit: bool) -> np.ndarray:
    """An LV with a 1-pixel spur into the wall; with ``slit``, a 4-pixel background slit from
    the spur's tip into the MYO, open to the outside only corner to corner: 4-connected, LV
    and MYO enclose it (criterion 7), 8-connected it is outside background (no MYO hole),
    and only the spur's tip touches it (no LV/background frontier)."""
    lab = heart(rv=False)
    lab[C, C - 12] = 3
    if slit:
        lab[C, C - 16 : C - 12] = 0
        lab[C - 1, C - 17] = 0
    return lab


class Case(NamedTuple):
    failing: np.ndarray  # fails exactly its criterion (and ``also``) at fail_mm
    passing: np.ndarray  # a nearby mask that passes every criterion at pass_mm
    fail_mm: tuple[float, float] = ONE_MM
    pass_mm: tuple[float, float] = ONE_MM
    also: tuple[str, ...] = ()  # criteria that cannot help failing with this one


CASES: dict[str, Case] = {
    # background enclosed in the LV also lies inside the ring and touches the LV
    "holes_in_lv": Case(
        edit(heart(), [(C, C)], 0),
        heart(),
        also=("holes_in_myo", "frontier_between_lv_and_background"),
    ),
    "holes_in_rv": Case(edit(heart(), [(C, C + 26)], 0), heart()),
    # a background pixel inside the myocardial wall
    "holes_in_myo": Case(edit(heart(), [(C, C - 15)], 0), heart()),
    # an LV pixel inside the wall, 3 px from the cavity / touching the cavity
    "disconnectivity_in_lv": Case(edit(heart(), [(C, C - 15)], 3), edit(heart(), [(C, C - 12)], 3)),
    # an RV pixel against the far side of the MYO / against the RV itself
    "disconnectivity_in_rv": Case(edit(heart(), [(C, C - 18)], 1), edit(heart(), [(C, C + 36)], 1)),
    # a MYO pixel one background pixel away from the ring / touching it
    "disconnectivity_in_myo": Case(
        edit(heart(), [(C, C - 19)], 2), edit(heart(), [(C, C - 18)], 2)
    ),
    # a 4-pixel slit (> 128*128/2**14 = 1) enclosed by LV and MYO / the spur without it (a
    # gap of any size between the LV and a closed MYO fails criteria 3 and 11 as well:
    # test_gaps_between_lv_and_myo)
    "holes_between_lv_and_myo": Case(lv_spur(slit=True), lv_spur(slit=False)),
    "holes_between_rv_and_myo": Case(
        edit(heart(), [(C, C + 18), (C - 1, C + 18)], 0),
        edit(heart(), [(C, C + 18)], 0),
    ),
    # RV 2 px from the MYO / touching it
    "rv_disconnected_from_myo": Case(rv_at(20), rv_at(18)),
    "frontier_between_lv_and_rv": Case(diagonal_wall(1, wall=1), diagonal_wall(1, wall=2)),
    "frontier_between_lv_and_background": Case(diagonal_wall(0, wall=1), diagonal_wall(0, wall=2)),
    # bite 6 mm deep / 2 mm deep
    "lv_concavity": Case(bitten_lv(12, 7), bitten_lv(14, 4)),
    # 13 px deep: 32.5 mm at 2.5 mm/px / 13 mm at 1 mm/px
    "rv_concavity": Case(rv_wrapping(), rv_wrapping(), fail_mm=(2.5, 2.5)),
    # a 5x4 notch in the MYO's outer contour / a 2x4 one, which the 3x3 erosion removes
    "myo_concavity": Case(
        edit(heart(), [(y, x) for y in range(C - 2, C + 3) for x in range(C - 18, C - 14)], 0),
        edit(heart(), [(y, x) for y in range(C - 1, C + 1) for x in range(C - 18, C - 14)], 0),
    ),
    "lv_circularity": Case(bar(3, 3, with_myo=True), bar(7, 3, with_myo=True)),
    "myo_circularity": Case(bar(3, 2, with_myo=False), bar(7, 2, with_myo=False)),
}


def one_hot(*names: str) -> np.ndarray:
    return np.array([criterion in names for criterion in CRITERIA])


def test_criteria_are_the_16_of_the_table() -> None:
    assert len(CRITERIA) == 16 == len(set(CRITERIA))
    assert set(CASES) == set(CRITERIA)
    assert all(re.fullmatch(r"[a-z_]+", name) for name in CRITERIA)


@pytest.mark.parametrize("name", CRITERIA)
def test_each_criterion_fails_alone_and_a_nearby_mask_passes(name: str) -> None:
    case = CASES[name]
    assert check_slice(case.failing, case.fail_mm).tolist() == one_hot(name, *case.also).tolist()
    assert not check_slice(case.passing, case.pass_mm).any()


def test_empty_and_partial_slices() -> None:
    assert not check_slice(np.zeros((SIZE, SIZE), np.uint8), ONE_MM).any()
    assert not check_slice(heart(rv=False), ONE_MM).any()  # no RV: no RV criterion fails
    ring = heart(rv=False)
    ring[ring == 3] = 0  # a ring around unlabelled background: a hole of the MYO
    assert check_slice(ring, ONE_MM).tolist() == one_hot("holes_in_myo").tolist()
    apex = (disc(C, C, 8) * 2).astype(np.uint8)  # an apical MYO disc without cavity
    assert not check_slice(apex, ONE_MM).any()
    lv_only = (disc(C, C, 10) * 3).astype(np.uint8)
    assert (
        check_slice(lv_only, ONE_MM).tolist()
        == one_hot("frontier_between_lv_and_background").tolist()
    )


def square_lv() -> np.ndarray:
    """A 17x17 LV square in a MYO disc (r 18): its corners touch the wall diagonally."""
    lab = (disc(C, C, 18) * 2).astype(np.uint8)
    lab[C - 8 : C + 9, C - 8 : C + 9] = 3
    return lab


def test_gaps_between_lv_and_myo() -> None:
    """A background gap opened between the LV cavity and a closed MYO is an error at any
    size: a hole of the MYO (the LV is the only thing the ring may enclose), and a frontier
    between LV and background once it touches more than 1 LV pixel; criterion 7 adds itself
    above H*W/2**14 pixels (1 at 128x128). The code before this test called the 1-pixel
    gap, the 2-pixel one in a 256x256 slice and the corner gap valid."""
    ring_and_frontier = one_hot("holes_in_myo", "frontier_between_lv_and_background")
    one = edit(heart(), [(C, C - 12)], 0)  # the MYO pixel left of the LV, 3 LV neighbours
    assert check_slice(one, ONE_MM).tolist() == ring_and_frontier.tolist()
    two = edit(heart(), [(C, C - 12), (C + 1, C - 12)], 0)
    assert (
        check_slice(two, ONE_MM).tolist()
        == (ring_and_frontier | one_hot("holes_between_lv_and_myo")).tolist()
    )
    # 1 pixel wide, 2 deep, in a 256x256 slice: not above 256*256/2**14 = 4 pixels
    deep = edit(heart(), [(C, C - 12), (C, C - 13)], 0)
    assert check_slice(np.pad(deep, 64), ONE_MM).tolist() == ring_and_frontier.tolist()
    # a background pixel at the LV's corner touches 1 LV pixel only: a hole of the MYO
    assert not check_slice(square_lv(), ONE_MM).any()
    corner = edit(square_lv(), [(C - 9, C - 9)], 0)
    assert check_slice(corner, ONE_MM).tolist() == one_hot("holes_in_myo").tolist()
    # RV inside the ring with the LV is not cavity either
    inside = edit(heart(rv=False), [(C, C - 12)], 1)
    assert check_slice(inside, ONE_MM)[CRITERIA.index("holes_in_myo")]
    # the whole inner band of the wall, 1 and 2 pixels wide
    for width in (1, 2):
        lab = heart(rv=False)
        lab[(lab == 2) & ndimage.binary_dilation(lab == 3, iterations=width)] = 0
        assert (
            check_slice(lab, ONE_MM).tolist()
            == (ring_and_frontier | one_hot("holes_between_lv_and_myo")).tolist()
        )
    # a 1- or 2-pixel channel through the wall: the cavity opens onto the outside
    for width in (1, 2):
        lab = heart(rv=False)
        channel = lab[C : C + width, : C - 11]
        channel[channel == 2] = 0
        open_ring = ("frontier_between_lv_and_background", "myo_concavity", "myo_circularity")
        assert check_slice(lab, ONE_MM).tolist() == one_hot(*open_ring).tolist()


def test_concavity_thresholds_are_in_mm_of_the_slice_spacing() -> None:
    bitten = bitten_lv(12, 7)  # 6 pixels deep
    assert check_slice(bitten, (2.0, 2.0)).tolist() == one_hot("lv_concavity").tolist()
    assert not check_slice(bitten, (0.5, 0.5)).any()
    assert not check_slice(bitten_lv(14, 7), ONE_MM).any()  # exactly 4.0 mm: not > 4 mm
    assert check_slice(bitten_lv(14, 7), (1.01, 1.01))[CRITERIA.index("lv_concavity")]
    assert not check_slice(rv_wrapping(), (2.3, 2.3)).any()  # 29.9 mm


def test_structure_touching_the_image_border() -> None:
    lab = np.zeros((40, 40), np.uint8)
    lab[:, :12] = 1  # an RV cut by the image edge, against a MYO band
    lab[:, 12:16] = 2
    assert not check_slice(lab, ONE_MM).any()


def _reference(label: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """The criteria exactly as the module docstring states them, one slice at a time,
    straight from scipy and skimage (slow, obviously right)."""
    small = label.shape[0] * label.shape[1] / 2**14
    lab = np.pad(label, 1)  # the 1-pixel padding: index [0, 0] is outside
    lv, myo, rv, bg = lab == 3, lab == 2, lab == 1, lab == 0
    s8, s4 = np.ones((3, 3), bool), ndimage.generate_binary_structure(2, 1)

    def count(mask: np.ndarray, structure: np.ndarray) -> int:
        return ndimage.label(mask, structure)[1]

    def enclosed(mask: np.ndarray, structure: np.ndarray) -> list[np.ndarray]:
        comp, n = ndimage.label(mask, structure)
        return [comp == k for k in range(1, n + 1) if k != comp[0, 0]]

    def between(a: np.ndarray, b: np.ndarray) -> bool:
        if not (a.any() and b.any()):
            return False
        union = a | b
        for own, other in ((a, b), (b, a)):
            for hole in enclosed(~own, s4):
                if not (hole & other).any():
                    union |= hole
        return sum(int(h.sum()) for h in enclosed(~union, s4)) > small

    def depth_over(mask: np.ndarray, threshold: float) -> bool:
        filled = ndimage.binary_fill_holes(mask)
        if not filled.any():
            return False
        hull = convex_hull_image(filled)
        pocket = ndimage.binary_erosion(hull & ~filled, s8)
        if not pocket.any():
            return False
        return ndimage.distance_transform_edt(hull, sampling=spacing)[pocket].max() > threshold

    def not_round(mask: np.ndarray) -> bool:
        filled = ndimage.binary_fill_holes(mask)
        length = perimeter(filled, neighborhood=4)
        return filled.any() and length > 1e-6 and 4 * math.pi * filled.sum() / length**2 < 0.2

    values = {
        "holes_in_lv": lv.any() and count(~lv, s8) > 1,
        "holes_in_rv": rv.any() and count(~rv, s8) > 1,
        "holes_in_myo": any((h & ~lv).any() for h in enclosed(~myo, s8)),
        "disconnectivity_in_lv": count(lv, s8) > 1,
        "disconnectivity_in_rv": count(rv, s8) > 1,
        "disconnectivity_in_myo": count(myo, s8) > 1,
        "holes_between_lv_and_myo": between(lv, myo),
        "holes_between_rv_and_myo": between(rv, myo),
        "rv_disconnected_from_myo": rv.any()
        and myo.any()
        and not (ndimage.binary_dilation(rv, s8) & myo).any(),
        "frontier_between_lv_and_rv": (lv & ndimage.binary_dilation(rv, s8)).sum() > 1,
        "frontier_between_lv_and_background": (lv & ndimage.binary_dilation(bg, s8)).sum() > 1,
        "lv_concavity": depth_over(lv, 4.0),
        "rv_concavity": depth_over(rv, 30.0),
        "myo_concavity": depth_over(myo, 0.0),
        "lv_circularity": not_round(lv),
        "myo_circularity": not_round(myo),
    }
    return np.array([bool(values[name]) for name in CRITERIA])


def random_slices(count: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """Ellipse hearts with slivers, wrapped RVs, speckles and bites: every criterion fails
    somewhere in 300 of them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]

    def ellipse(cy: float, cx: float, a: float, b: float, theta: float) -> np.ndarray:
        u = (yy - cy) * np.cos(theta) + (xx - cx) * np.sin(theta)
        v = -(yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
        return (u / a) ** 2 + (v / b) ** 2 < 1

    out = np.zeros((count, size, size), np.uint8)
    for lab in out:
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        a, b = rng.uniform(4, size * 0.3, 2)
        theta = rng.uniform(0, np.pi)
        if rng.random() < 0.9:
            lab[ellipse(cy, cx, a, b, theta)] = 2
        scale = rng.uniform(0.3, 0.85)
        major, minor = a * scale, b * scale
        if rng.random() < 0.15:
            major, minor = rng.uniform(16, 22), rng.uniform(1.0, 2.0)
        if rng.random() < 0.9:
            lab[ellipse(cy + rng.normal(0, 1), cx + rng.normal(0, 1), major, minor, theta)] = 3
        if rng.random() < 0.7:
            ry, rx = cy + rng.normal(0, a), cx + rng.normal(0, b)
            rv = ellipse(
                ry,
                rx,
                rng.uniform(3, size * 0.3),
                rng.uniform(3, size * 0.3),
                rng.uniform(0, np.pi),
            )
            if rng.random() < 0.3:
                rv = ellipse(cy, cx + b, a * 1.6, b * 1.6, theta) & ~ellipse(
                    cy, cx, a * 1.1, b * 1.1, theta
                )
            lab[rv & (lab == 0)] = 1
        for _ in range(rng.poisson(2)):
            y, x = rng.integers(0, size, 2)
            r = int(rng.integers(1, 4))
            lab[max(y - r // 2, 0) : y + r, max(x - r // 2, 0) : x + r] = rng.integers(0, 4)
    return out


def test_batched_implementation_matches_the_reference_on_random_masks() -> None:
    labels = random_slices(300)
    spacing = np.random.default_rng(1).uniform(0.5, 3.0, (300, 2))
    fast = check_slices(labels, spacing).errors
    slow = np.stack([_reference(lab, tuple(sp)) for lab, sp in zip(labels, spacing, strict=True)])
    assert (slow.sum(axis=0) >= 2).all(), "the random set must exercise every criterion"
    mismatch = np.argwhere(fast != slow)
    assert mismatch.size == 0, [(int(i), CRITERIA[j]) for i, j in mismatch[:10]]


def test_constructed_masks_give_the_same_answer_alone_batched_and_in_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    masks = [m for case in CASES.values() for m in (case.failing, case.passing)]
    spacing = [s for case in CASES.values() for s in (case.fail_mm, case.pass_mm)]
    alone = np.stack([check_slice(m, s) for m, s in zip(masks, spacing, strict=True)])
    batched = check_slices(np.stack(masks), np.array(spacing))
    assert (batched.errors == alone).all()
    monkeypatch.setattr(anatomy, "_CHUNK", 5)  # several chunks, so that the pool is used
    assert (check_slices(np.stack(masks), np.array(spacing), workers=2).errors == alone).all()
    reference = np.stack([_reference(m, s) for m, s in zip(masks, spacing, strict=True)])
    assert (reference == alone).all()


def test_fast_hull_is_skimage_convex_hull_image() -> None:
    rng = np.random.default_rng(3)
    for lab in random_slices(60, seed=5):
        for value in (1, 2, 3):
            shape = ndimage.binary_fill_holes(lab == value)
            if shape.any():
                assert (anatomy._hull(shape) == convex_hull_image(shape)).all()
    for _ in range(40):
        shape = rng.random((int(rng.integers(1, 12)), int(rng.integers(1, 12)))) < 0.3
        if shape.any():
            assert (anatomy._hull(shape) == convex_hull_image(shape)).all()


def test_result_summary() -> None:
    labels = np.stack([heart(), CASES["holes_in_rv"].failing, np.zeros((SIZE, SIZE), np.uint8)])
    result = check_slices(labels, ONE_MM)
    assert result.valid.tolist() == [True, False, True]
    assert result.failed(1) == ["holes_in_rv"]
    summary = result.summary()
    assert summary["slices"] == 3 and summary["valid_slices"] == 2
    assert summary["anatomical_validity"] == pytest.approx(2 / 3)
    assert summary["errors_per_criterion"]["holes_in_rv"] == 1
    assert sum(summary["errors_per_criterion"].values()) == 1
    assert math.isnan(
        check_slices(np.zeros((0, 8, 8), np.uint8), ONE_MM).summary()["anatomical_validity"]
    )


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="0..3"):
        check_slice(np.full((8, 8), 4), ONE_MM)
    with pytest.raises(ValueError, match="whole numbers"):
        check_slice(np.full((8, 8), 1.5), ONE_MM)
    with pytest.raises(ValueError, match="2D"):
        check_slice(np.zeros((2, 8, 8)), ONE_MM)
    with pytest.raises(ValueError, match="spacing"):
        check_slices(np.zeros((3, 8, 8), np.uint8), np.ones((2, 2)))


def _save(path: Path, data: np.ndarray, zooms: tuple[float, ...] = (1.0, 1.0, 10.0)) -> Path:
    image = nib.Nifti1Image(data, np.diag([*(list(zooms) + [1.0, 1.0])[:3], 1.0]))
    image.header.set_zooms(zooms)
    nib.save(image, str(path))
    return path


def test_volume_report_reads_the_header_spacing(tmp_path: Path) -> None:
    volume = np.stack([heart(), bitten_lv(12, 7), np.zeros((SIZE, SIZE), np.uint8)], axis=2)
    path = _save(tmp_path / "mask.nii.gz", volume.astype(np.uint8), (0.5, 0.5, 10.0))
    report = volume_report(path)
    assert report["file"] == str(path)
    assert (report["slices"], report["valid_slices"]) == (3, 3)  # 6 px bite = 3 mm at 0.5 mm
    path = _save(tmp_path / "coarse.nii.gz", volume.astype(np.uint8), (2.0, 2.0, 10.0))
    report = volume_report(path)
    assert report["valid_slices"] == 2
    assert report["anatomical_validity"] == pytest.approx(2 / 3)
    assert report["per_slice"][1] == {"slice": 1, "valid": False, "failed": ["lv_concavity"]}
    assert report["errors_per_criterion"]["lv_concavity"] == 1
    text = render_volume_report(report)
    assert "2/3" in text and "lv_concavity" in text and str(path) in text


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (np.full((4, 4, 2), 5, np.uint8), "0..3"),
        (np.full((4, 4, 2), 1.5, np.float32), "whole numbers"),
        (np.zeros((4, 4, 2, 2), np.uint8), "3D"),
        (np.zeros((4, 4), np.uint8), "3D"),
    ],
)
def test_volume_report_names_the_file_on_bad_volumes(
    tmp_path: Path, data: np.ndarray, problem: str
) -> None:
    path = _save(tmp_path / "bad.nii.gz", data, (1.0,) * data.ndim)
    with pytest.raises(DataError, match=re.escape(str(path))) as info:
        volume_report(path)
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_volume_report_on_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        volume_report(tmp_path / "missing.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(DataError, match=re.escape(str(corrupt))):
        volume_report(corrupt)


# Every slice of the 200 expert masks that fails at native resolution, each looked at in
# a montage (see the module's report): open myocardium at basal slices, RV fragments,
# background slits between RV and MYO, and a dilated RV wrapping the septum by > 30 mm.
REVIEWED_NATIVE_FAILURES = {
    ("patient003_frame01", 0): ["frontier_between_lv_and_background", "myo_concavity"],
    ("patient003_frame15", 0): ["lv_concavity"],
    ("patient011_frame01", 0): [
        "frontier_between_lv_and_background",
        "myo_concavity",
        "myo_circularity",
    ],
    ("patient014_frame01", 8): ["disconnectivity_in_rv"],
    ("patient016_frame01", 1): ["holes_between_rv_and_myo"],
    ("patient026_frame12", 7): ["disconnectivity_in_rv"],
    ("patient029_frame01", 0): [
        "disconnectivity_in_myo",
        "frontier_between_lv_and_rv",
        "frontier_between_lv_and_background",
        "myo_concavity",
    ],
    ("patient036_frame12", 5): ["disconnectivity_in_rv"],
    ("patient038_frame11", 2): ["disconnectivity_in_rv"],
    ("patient044_frame11", 5): ["disconnectivity_in_rv"],
    ("patient045_frame13", 0): [
        "frontier_between_lv_and_background",
        "myo_concavity",
        "myo_circularity",
    ],
    ("patient047_frame01", 6): ["disconnectivity_in_rv"],
    ("patient050_frame12", 0): ["myo_concavity"],
    ("patient052_frame01", 4): ["frontier_between_lv_and_background"],
    ("patient060_frame14", 8): ["frontier_between_lv_and_background"],
    ("patient062_frame01", 0): ["holes_between_rv_and_myo"],
    ("patient064_frame12", 7): ["disconnectivity_in_rv"],
    ("patient065_frame14", 1): ["frontier_between_lv_and_background"],
    ("patient068_frame12", 0): [
        "disconnectivity_in_myo",
        "frontier_between_lv_and_background",
        "myo_concavity",
        "myo_circularity",
    ],
    ("patient069_frame12", 0): [
        "frontier_between_lv_and_background",
        "myo_concavity",
        "myo_circularity",
    ],
    ("patient081_frame01", 0): ["rv_concavity"],
    ("patient081_frame01", 1): ["rv_concavity"],
    ("patient081_frame01", 2): ["rv_concavity"],
    ("patient084_frame10", 0): ["holes_between_rv_and_myo", "myo_concavity", "myo_circularity"],
    ("patient088_frame12", 1): ["frontier_between_lv_and_background"],
    ("patient088_frame12", 2): ["frontier_between_lv_and_background"],
    ("patient090_frame04", 2): ["holes_between_rv_and_myo"],
    ("patient096_frame01", 1): ["holes_between_rv_and_myo"],
    ("patient096_frame08", 1): [
        "frontier_between_lv_and_background",
        "myo_concavity",
        "myo_circularity",
    ],
}


# Invalid slices among the 1902 after nearest-neighbour resampling to 128x128 (the same
# slices, failing the same criteria, before and after the fix that made gaps between LV and
# MYO errors).
RESIZED_FAILURES = 128


def _resample(slices: np.ndarray, size: int = 128) -> np.ndarray:
    """Nearest-neighbour resize of [N, H, W] label slices to [N, size, size]."""
    tensor = torch.from_numpy(slices[:, None].astype(np.float32))
    resized = torch.nn.functional.interpolate(tensor, size=(size, size), mode="nearest-exact")
    return resized[:, 0].numpy().astype(np.uint8)


class Volume(NamedTuple):
    name: str  # patientNNN_frameMM
    slices: np.ndarray  # [Z, H, W] labels
    spacing: tuple[float, float]  # mm along axis 0 and axis 1 of a slice


@pytest.fixture(scope="module")
def expert_masks(acdc_real: Path) -> list[Volume]:
    """The 200 ground-truth volumes of the ACDC training set, at native resolution."""
    files = sorted(
        (acdc_real / "database" / "training").glob("patient*/patient*_frame??_gt.nii.gz")
    )
    assert len(files) == 200
    volumes = []
    for path in files:
        image = nib.load(str(path))
        slices = np.moveaxis(np.asanyarray(image.dataobj), 2, 0).astype(np.uint8)
        sy, sx = (float(z) for z in image.header.get_zooms()[:2])
        volumes.append(Volume(path.name.removesuffix("_gt.nii.gz"), slices, (sy, sx)))
    return volumes


@pytest.mark.slow
@pytest.mark.realdata
def test_real_expert_masks_are_nearly_all_valid(expert_masks: list[Volume]) -> None:
    native, resized, failures = [], [], {}
    for name, slices, (sy, sx) in expert_masks:
        result = check_slices(slices, (sy, sx))
        native.append(result.errors)
        for z in np.flatnonzero(~result.valid):
            failures[(name, int(z))] = result.failed(z)
            assert (result.errors[z] == _reference(slices[z], (sy, sx))).all()
        height, width = slices.shape[1:]
        resized.append(
            check_slices(_resample(slices), (sy * height / 128, sx * width / 128)).errors
        )
    native_errors, resized_errors = np.concatenate(native), np.concatenate(resized)
    native_rate = (~native_errors.any(axis=1)).mean()
    resized_rate = (~resized_errors.any(axis=1)).mean()
    print(f"\nACDC ground truth, {len(native_errors)} slices: validity {native_rate:.4f} native,")
    print(f"{resized_rate:.4f} after nearest-neighbour resampling to 128x128")
    for name, n_native, n_resized in zip(
        CRITERIA, native_errors.sum(0), resized_errors.sum(0), strict=True
    ):
        print(f"  {name:36s} {n_native:4d} {n_resized:4d}")
    assert len(native_errors) == 1902
    assert native_rate >= 0.98
    # the same 29 slices, failing the same criteria, before and after the fix that made
    # gaps between LV and MYO errors (criteria 3 and 11)
    assert failures == REVIEWED_NATIVE_FAILURES
    assert int(resized_errors.any(axis=1).sum()) == RESIZED_FAILURES


_DIRECTIONS = ((0, 1), (1, 0), (0, -1), (-1, 0))
_CROSS = ndimage.generate_binary_structure(2, 1)
S8 = np.ones((3, 3), bool)


GAP_KINDS = (("pixels", 1), ("pixels", 2), ("band", 1), ("band", 2), ("corner", 1))


def open_gaps(lab: np.ndarray) -> dict[tuple[str, int], list[np.ndarray]]:
    """Copies of ``lab`` with a background gap opened between the LV and the MYO, for each
    kind of ``GAP_KINDS`` and each direction from the LV's centroid (right, down, left, up),
    at the MYO pixel next to the LV closest to that ray (the seed):

    - ``("pixels", n)``: the seed, chosen among the MYO pixels 4-adjacent to the LV with at
      least 2 LV pixels in their 3x3 window, and for n = 2 one more MYO pixel 4-adjacent to
      the seed (and to the LV if one is);
    - ``("band", w)``: the MYO pixels within w 4-steps of the LV and 3 pixels of that seed,
      a short stretch of the wall's inner band w pixels thick;
    - ``("corner", 1)``: the seed alone, chosen among the MYO pixels that touch exactly 1 LV
      pixel, corner to corner, and no background or RV outside the ring (so that the MYO
      stays closed around the gap).
    """
    fore = np.argwhere(lab != 0)
    (top, left), (bottom, right) = np.maximum(fore.min(axis=0) - 3, 0), fore.max(axis=0) + 4
    crop = lab[top:bottom, left:right]
    lv, myo = crop == LV_LABEL, crop == MYO_LABEL
    next_to_lv = ndimage.binary_dilation(lv, _CROSS)
    lv_around = ndimage.correlate(lv.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant")
    outside = ndimage.label(np.pad(~myo, 1, constant_values=True), np.ones((3, 3)))[0]
    exterior = outside[1:-1, 1:-1] == outside[0, 0]
    seeds = {
        "pixels": myo & next_to_lv & (lv_around >= 2),
        "corner": myo & ~next_to_lv & (lv_around == 1) & ~ndimage.binary_dilation(exterior, S8),
    }
    seeds["band"] = seeds["pixels"]
    bands = {w: myo & ndimage.binary_dilation(lv, _CROSS, iterations=w) for w in (1, 2)}
    cy, cx = np.argwhere(lv).mean(axis=0)
    yy, xx = np.mgrid[: crop.shape[0], : crop.shape[1]]
    out: dict[tuple[str, int], list[np.ndarray]] = {kind: [] for kind in GAP_KINDS}
    for kind, width in GAP_KINDS:
        ys, xs = np.nonzero(seeds[kind])
        for dy, dx in _DIRECTIONS:
            along = (ys - cy) * dy + (xs - cx) * dx
            if not (along > 0).any():
                continue
            across = np.abs((ys - cy) * dx - (xs - cx) * dy)
            k = int(np.argmin(np.where(along > 0, across, np.inf)))
            y, x = int(ys[k]), int(xs[k])
            if kind == "band":
                gap = bands[width] & ((yy - y) ** 2 + (xx - x) ** 2 <= 9)
            else:
                gap = np.zeros_like(lv)
                gap[y, x] = True
                near = [(y + a, x + b) for a, b in _DIRECTIONS if myo[y + a, x + b]]
                if width == 2 and near:
                    gap[max(near, key=lambda q: bool(next_to_lv[q]))] = True
            gapped = lab.copy()
            gapped[top:bottom, left:right][gap] = 0
            out[kind, width].append(gapped)
    return out


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("size", [None, 128])
def test_gaps_opened_between_lv_and_myo_in_real_masks_are_invalid(
    expert_masks: list[Volume], size: int | None
) -> None:
    """Every valid expert slice with an LV and a MYO, with a 1- or 2-pixel background gap
    opened between them, 4 places each: all invalid, at native resolution and at 128x128
    (where criterion 7 takes gaps above 1 pixel, natively above 3 or 4). Today's code
    called most of them valid (natively 29 of 7116 single pixels, none of the corner gaps)."""
    errors: dict[tuple[str, int], list[np.ndarray]] = {kind: [] for kind in GAP_KINDS}
    for _, slices, (sy, sx) in expert_masks:
        if size is not None:
            sy, sx = sy * slices.shape[1] / size, sx * slices.shape[2] / size
            slices = _resample(slices, size)
        gapped: dict[tuple[str, int], list[np.ndarray]] = {kind: [] for kind in GAP_KINDS}
        for z in np.flatnonzero(check_slices(slices, (sy, sx)).valid):
            if (slices[z] == LV_LABEL).any() and (slices[z] == MYO_LABEL).any():
                for kind, masks in open_gaps(slices[z]).items():
                    gapped[kind] += masks
        for kind, masks in gapped.items():
            if masks:
                errors[kind].append(check_slices(np.stack(masks), (sy, sx)).errors)
    lines = []
    for kind in GAP_KINDS:
        found = np.concatenate(errors[kind])
        lines.append(f"{kind}: {int(found.any(axis=1).sum())}/{len(found)} invalid")
        assert len(found) > 1000, kind
        assert found.any(axis=1).all(), lines[-1]
        if kind[0] == "corner":  # enclosed, touching 1 LV pixel: only criterion 3 sees it
            assert found[:, CRITERIA.index("holes_in_myo")].all(), lines[-1]
    print("\n" + "\n".join(lines))
