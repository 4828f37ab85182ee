from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seglab.data.store import SliceSet, load_split, save_split
from seglab.errors import DataError


def _slices(n: int = 5) -> SliceSet:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame(
        {
            "patient": [f"patient{i:03d}" for i in range(n)],
            "phase": ["ED"] * n,
            "slice_index": np.arange(n, dtype=np.int16),
        }
    )
    return SliceSet(
        image=rng.random((n, 8, 8), dtype=np.float32),
        label=rng.integers(0, 4, (n, 8, 8), dtype=np.uint8),
        meta=meta,
        extra={"pred_unet": rng.integers(0, 4, (n, 8, 8), dtype=np.uint8)},
    )


def test_round_trip(tmp_path: Path) -> None:
    original = _slices()
    save_split(tmp_path / "train.npz", original)
    loaded = load_split(tmp_path / "train.npz")
    np.testing.assert_array_equal(loaded.image, original.image)
    np.testing.assert_array_equal(loaded.label, original.label)
    np.testing.assert_array_equal(loaded.extra["pred_unet"], original.extra["pred_unet"])
    pd.testing.assert_frame_equal(loaded.meta, original.meta)
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]  # no temporary left behind


def test_length_mismatch_is_refused() -> None:
    s = _slices()
    with pytest.raises(ValueError, match="label has 4 slices"):
        SliceSet(image=s.image, label=s.label[:4], meta=s.meta)


def test_missing_and_corrupt_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prepared split not found"):
        load_split(tmp_path / "val.npz")
    bad = tmp_path / "test.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="test.npz: not a readable prepared split"):
        load_split(bad)
