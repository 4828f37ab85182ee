from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seglab.config import LggDataParams, LggPrepareParams, SplitParams
from seglab.data.phantom.lgg import write_lgg_phantom
from seglab.data.prepare_lgg import normalise_volume, prepare_lgg
from seglab.data.store import load_split


def _check_prepared(out: Path, size: int, patients: int, slices: int) -> None:
    meta = json.loads((out / "meta.json").read_text())
    ids = {k: set(v) for k, v in meta["splits"].items()}
    assert sum(len(v) for v in ids.values()) == patients
    assert not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    total = 0
    for split in ("train", "val", "test"):
        s = load_split(out / f"{split}.npz")
        total += len(s)
        assert s.image.shape[1:] == (3, size, size) and s.image.dtype == np.uint8
        assert s.label.shape[1:] == (size, size) and set(np.unique(s.label)) <= {0, 1}
        assert set(s.meta["patient"]) == ids[split]
        assert (s.meta["has_tumour"].to_numpy() == s.label.reshape(len(s), -1).any(1)).all()
        for _, vol in s.meta.groupby("patient"):  # numeric slice order kept
            assert list(vol["slice_number"]) == sorted(vol["slice_number"])
    assert total == slices


def test_prepare_phantom_resized(tmp_path: Path) -> None:
    raw = tmp_path / "lgg"
    write_lgg_phantom(raw, patients=4, seed=3)
    out = tmp_path / "prepared"
    params = LggDataParams(
        raw=str(raw), prepared=str(out), prepare=LggPrepareParams(size=64, split=SplitParams())
    )
    summary = prepare_lgg(params)
    n_slices = len(list(raw.rglob("*_mask.tif")))
    assert "prepared LGG" in summary
    _check_prepared(out, 64, 4, n_slices)


@pytest.mark.slow
@pytest.mark.realdata
def test_prepare_real_zip_native_size(lgg_real_zip: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare_lgg(
        LggDataParams(raw=str(lgg_real_zip), prepared=str(out)).model_copy(
            update={"prepare": LggPrepareParams(size=256)}
        )
    )
    _check_prepared(out, 256, 13, 518)
    empty = sum(
        int((~load_split(out / f"{s}.npz").meta["has_tumour"]).sum())
        for s in ("train", "val", "test")
    )
    assert empty == 316  # empty-mask slices are real negatives: all kept


def test_normalise_volume_ignores_background() -> None:
    rng = np.random.default_rng(0)
    vol = np.zeros((4, 16, 16, 3), np.uint8)
    vol[:, 4:12, 4:12] = rng.integers(40, 120, (4, 8, 8, 3), dtype=np.uint8)
    out = normalise_volume(vol)
    assert out[:, 0, 0].max() == 0  # background stays black
    assert out[:, 4:12, 4:12].max() == 255 and np.percentile(out[:, 4:12, 4:12], 50) > 60
