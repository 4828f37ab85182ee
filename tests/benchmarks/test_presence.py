"""``presence.py``: a structure the argmax left out comes back only where the rule says, and
the out-of-fold pool alone chooses the threshold, keeping the plain argmax's clean-up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.benchmarks.test_benchmarks import _script, prepared

from seglab.data.labels import LV, MYO, RV
from seglab.data.store import load_split

presence = _script("presence")


def _softmax(size: int = 12) -> torch.Tensor:
    """One slice: LV and MYO win their pixels; the RV never wins, but two regions of its
    softmax stand out, 9 pixels at 0.35 and 4 at 0.45."""
    p = torch.zeros(1, 4, size, size)
    p[0, 0] = 0.6
    p[0, LV, :3, :3], p[0, 0, :3, :3] = 0.9, 0.1
    p[0, MYO, 3, :3], p[0, 0, 3, :3] = 0.8, 0.2
    p[0, RV, 6:9, 6:9] = 0.35
    p[0, RV, 0:2, 10:12] = 0.45
    return p


def test_a_missing_structure_gets_its_largest_region_above_the_bar() -> None:
    p = _softmax()
    plain = presence.recall(p, None, 1)
    assert not (plain == RV).any()
    found = presence.recall(p, 0.3, 5)
    assert (found == RV).sum() == 9 and (found[0, 6:9, 6:9] == RV).all()  # largest, not likeliest
    assert ((found == LV) == (plain == LV)).all() and ((found == MYO) == (plain == MYO)).all()
    assert not (presence.recall(p, 0.3, 10) == RV).any()  # below min_pixels
    assert (presence.recall(p, 0.4, 1) == RV).sum() == 4  # only the region above the bar
    p[0, RV, 5, 5], p[0, 0, 5, 5] = 0.9, 0.1  # the RV wins a pixel: the slice is not missing it
    assert (presence.recall(p, 0.3, 1) == RV).sum() == 1


def _probs_from_labels(labels: np.ndarray, softness: float) -> np.ndarray:
    """float16 softmax ``[N, 4, H, W]`` whose argmax is ``labels`` but which gives every RV
    pixel of the labels ``softness`` when it takes it away from the argmax."""
    onehot = np.eye(4, dtype=np.float32)[labels].transpose(0, 3, 1, 2)
    probs = 0.85 * onehot + 0.05
    rv = labels == RV
    probs[:, RV][rv], probs[:, 0][rv] = softness, 1.0 - softness - 0.1
    return probs.astype(np.float16)


def test_the_pool_chooses_the_threshold_and_test_only_reports(tmp_path: Path) -> None:
    folder = prepared(tmp_path / "prepared")
    split = {n: load_split(folder / f"{n}.npz") for n in ("train", "val", "test")}
    pool = np.concatenate([split["train"].label, split["val"].label])
    stored = {}
    for f in (0, 1):  # every RV lost to the argmax but ranked at 0.3 in the pool; test no RV
        stored[f"val_flips{f}"] = _probs_from_labels(pool, 0.3)
        stored[f"test_flips{f}"] = _probs_from_labels(split["test"].label, 0.05)
    np.savez(tmp_path / "p.npz", **stored)
    out = tmp_path / "out" / "presence"
    out.parent.mkdir()
    argv = ["--probs", str(tmp_path / "p.npz"), "--prepared", str(folder), "--out", str(out)]
    result = presence.main([*argv, "--thresholds", "0.2", "0.4", "--min-pixels", "1"])
    assert json.loads(out.with_name("presence.json").read_text()) == result
    val = {k: row["chosen_val_dice_mean"] for k, row in result["options"].items()}
    assert result["chosen_threshold"] == "0.2" and val["0.2"] > val["none"] == val["0.4"]
    assert all(
        row["cleanup"] == result["options"]["none"]["cleanup"] for row in result["options"].values()
    )
    assert result["chosen"]["test"]["rv_missed"] == result["options"]["none"]["test"]["rv_missed"]
    assert result["pool_slices"] == 20 and result["test_slices"] == 4
    np.savez(tmp_path / "p.npz", **{k: v[:3] for k, v in stored.items()})
    with pytest.raises(SystemExit, match="not the splits five_folds.py ran on"):
        presence.main(argv)
