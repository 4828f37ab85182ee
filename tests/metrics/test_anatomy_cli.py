"""`seglab anatomy MASK [--json]`: per-slice validity of a label volume, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seglab.cli import main


def save(
    path: Path, data: np.ndarray, zooms: tuple[float, float, float] = (1.5, 1.5, 10.0)
) -> Path:
    image = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    image.header.set_zooms(zooms)
    nib.save(image, str(path))
    return path


def ring_volume(hole: bool) -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    r2 = (yy - 32) ** 2 + (xx - 32) ** 2
    slice_ = np.where(r2 < 15**2, 2, 0).astype(np.uint8)
    slice_[r2 < 10**2] = 3
    volume = np.stack([np.zeros_like(slice_), slice_, slice_], axis=2)
    if hole:
        volume[32, 32, 2] = 0
    return volume


@pytest.mark.realdata
def test_real_ground_truth_json(acdc_real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = acdc_real / "database" / "training" / "patient001" / "patient001_frame01_gt.nii.gz"
    code = main(["anatomy", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["file"] == str(path)
    assert report["slices"] == 10 == len(report["per_slice"])
    assert report["spacing_mm"] == pytest.approx([1.5625, 1.5625])
    assert code == (0 if report["valid_slices"] == 10 else 1)
    assert code == 0  # none of patient001's ED slices is flagged


def test_valid_and_invalid_volumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = save(tmp_path / "good.nii.gz", ring_volume(hole=False))
    assert main(["anatomy", str(good), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["anatomical_validity"] == 1.0 and report["slices"] == 3

    bad = save(tmp_path / "hole.nii.gz", ring_volume(hole=True))
    assert main(["anatomy", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "2/3" in out and "holes_in_lv" in out and "NO" in out


def test_labels_outside_0_to_3_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    volume = ring_volume(hole=False)
    volume[0, 0, 0] = 7
    path = save(tmp_path / "seven.nii.gz", volume)
    assert main(["anatomy", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "0..3" in lines[0]


def test_unreadable_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a nifti at all")
    assert main(["anatomy", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]
