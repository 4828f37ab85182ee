"""``five_folds.py``: each fold trains without the patients it is scored on, every patient
outside the test split is predicted once out of fold, validation alone chooses the inference,
and the same command again resumes instead of training anew."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tests.benchmarks.test_benchmarks import _script, one_epoch_argv, prepared

from seglab.data.store import concat, load_split, save_split

five_folds = _script("five_folds")
_script("common")  # the stand-in slices of ``prepared``


def _pool(folder: Path) -> Path:
    """``prepared``'s splits with val's patients renamed: the split is patient-level."""
    val = load_split(folder / "val.npz")
    val.meta["patient"] = "v" + val.meta["patient"]
    save_split(folder / "val.npz", val)
    return folder


def test_folds_split_the_pool_by_patient(tmp_path: Path) -> None:
    folder = _pool(prepared(tmp_path / "prepared"))
    pool = concat([load_split(folder / "train.npz"), load_split(folder / "val.npz")])
    assert len(pool) == 20 and pool.meta["patient"].nunique() == 5
    fold = np.arange(len(pool)) // 4 % 2  # whole patients (four slices each) in two folds
    seen = []
    for k in (0, 1):
        part = five_folds.fold_parts(pool, fold, k)
        train, held = (set(part[n].meta["patient"]) for n in ("train", "val"))
        assert not train & held and train | held == set(pool.meta["patient"])
        np.testing.assert_array_equal(part["val"].label, pool.label[fold == k])
        seen += sorted(held)
    assert sorted(seen) == sorted(set(pool.meta["patient"]))


def test_trains_each_fold_chooses_out_of_fold_and_scores_the_ensemble(tmp_path: Path) -> None:
    folder = _pool(prepared(tmp_path / "prepared"))
    out = tmp_path / "out" / "cv"
    argv = one_epoch_argv(tmp_path, folder, out)
    result = five_folds.main([*argv, "--save-probs"])
    assert json.loads(out.with_name("cv.json").read_text()) == result
    assert result["patients"] == 5 and result["test_slices"] == 4
    assert [f["val_patients"] for f in result["fold_models"]] == [1] * 5
    for row in (result["ensemble"], *result["fold_models"]):
        options = row["val_dice_mean_options"]
        assert row["chosen_val_dice_mean"] == max(options.values())  # validation decides
        assert set(row["test"]) >= {"dice_mean", "anatomical_validity", "dice3d_mean"}
    single = [f["test"]["dice_mean"] for f in result["fold_models"]]
    assert result["single_model_test_dice_mean"]["min"] == min(single)
    assert all(out.with_name(f"cv.fold{k}.curves.csv").is_file() for k in range(5))
    again = five_folds.main(argv)
    assert again["train_seconds"] == result["train_seconds"]  # every fold resumed, none retrained
    with np.load(out.with_name("cv.probs.npz")) as probs:
        shapes = {name: probs[name].shape for name in probs.files}
        assert probs["val_flips0"].dtype == np.float16
        np.testing.assert_allclose(probs["test_flips1"].astype(float).sum(1), 1.0, atol=5e-3)
    pool = (20, 4, *load_split(folder / "test.npz").label.shape[1:])
    assert shapes == {f"{n}_flips{f}": (s, *pool[1:]) for n, s in (("val", 20), ("test", 4))
                      for f in (0, 1)}  # fmt: skip
