from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seglab.config import AcdcDataParams, AcdcPrepareParams, SplitParams
from seglab.data.prepare_acdc import prepare_acdc
from seglab.data.store import load_split
from seglab.errors import DataError
from seglab.metrics.anatomy import anatomy_qc

GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")


def _subset(acdc_real: Path, tmp_path: Path, per_group: int) -> Path:
    """A plain folder of patientNNN symlinks: ``per_group`` real patients of each group."""
    root = tmp_path / "acdc"
    root.mkdir()
    training = acdc_real / "database" / "training"
    taken = {group: 0 for group in GROUPS}
    for folder in sorted(training.glob("patient*")):
        group = next(g for g in GROUPS if f"Group: {g}\n" in (folder / "Info.cfg").read_text())
        if taken[group] < per_group:
            taken[group] += 1
            (root / folder.name).symlink_to(folder, target_is_directory=True)
    return root


def _params(raw: Path, out: Path) -> AcdcDataParams:
    split = SplitParams(val=0.2, test=0.2, seed=0)
    return AcdcDataParams(raw=str(raw), prepared=str(out), prepare=AcdcPrepareParams(split=split))


@pytest.mark.slow
@pytest.mark.realdata
def test_prepare_real_subset(acdc_real: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    summary = prepare_acdc(_params(_subset(acdc_real, tmp_path, 3), out), qc=anatomy_qc)
    assert "train 5 patients" in summary and "test 5 patients" in summary
    assert "ground truth" in summary and "anatomically valid" in summary
    meta = json.loads((out / "meta.json").read_text())
    patients = {split: set(ids) for split, ids in meta["splits"].items()}
    assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    assert meta["crop_coverage_min"] > 0.95
    # expert masks at the prepared resolution are nearly all valid (anatomy.md)
    assert all(q["anatomical_validity"] > 0.9 for q in meta["qc"].values())
    for split in ("train", "val", "test"):
        s = load_split(out / f"{split}.npz")
        assert set(s.meta["patient"]) == patients[split]  # no patient crosses splits
        assert s.image.shape[1:] == (128, 128) and s.label.shape == s.image.shape
        assert set(s.meta["phase"]) == {"ED", "ES"}
        assert set(s.meta["group"]) == set(GROUPS)
        np.testing.assert_allclose(s.spacing, 200.0 / 128)
        # slice indices run 0..slice_count-1 within each volume
        for _, vol in s.meta.groupby(["patient", "phase"]):
            assert list(vol["slice_index"]) == list(range(vol["slice_count"].iloc[0]))
        assert int(meta["slices"][split]) == len(s)
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json",
        "test.npz",
        "train.npz",
        "val.npz",
    ]


@pytest.mark.realdata
def test_bad_patient_leaves_nothing_behind(acdc_real: Path, tmp_path: Path) -> None:
    raw = _subset(acdc_real, tmp_path, 1)
    broken = raw / "patient021"  # HCM: replace the link by a copy without its ES mask
    target = broken.resolve()
    broken.unlink()
    broken.mkdir()
    for f in target.iterdir():
        if not f.name.endswith("_gt.nii.gz") or "frame01" in f.name:
            (broken / f.name).symlink_to(f)
    out = tmp_path / "prepared"
    # one patient per group: any split but train would be empty, so ask for train only
    split = AcdcPrepareParams(split=SplitParams(val=0.0, test=0.0))
    with pytest.raises(DataError, match="patient021"):
        prepare_acdc(AcdcDataParams(raw=str(raw), prepared=str(out), prepare=split))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
