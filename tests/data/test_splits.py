from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seglab.config import SplitParams
from seglab.data.splits import patient_folds, patient_splits, rounding_note
from seglab.errors import ConfigError, SeglabError

GROUPS = {f"patient{i:03d}": g for i, g in enumerate(["NOR", "MINF", "DCM", "HCM", "RV"] * 20, 1)}


def test_every_patient_in_exactly_one_split() -> None:
    splits = patient_splits(GROUPS, SplitParams(val=0.1, test=0.2, seed=1))
    seen = [pid for ids in splits.values() for pid in ids]
    assert sorted(seen) == sorted(GROUPS)
    assert len(seen) == len(set(seen))
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (70, 10, 20)


def test_stratified_by_group() -> None:
    splits = patient_splits(GROUPS, SplitParams(val=0.1, test=0.2, seed=3))
    for split, expected in (("train", 14), ("val", 2), ("test", 4)):
        per_group = {g: 0 for g in set(GROUPS.values())}
        for pid in splits[split]:
            per_group[GROUPS[pid]] += 1
        assert set(per_group.values()) == {expected}, (split, per_group)


def test_seeded_and_seed_sensitive() -> None:
    a = patient_splits(GROUPS, SplitParams(seed=7))
    assert a == patient_splits(GROUPS, SplitParams(seed=7))
    assert a != patient_splits(GROUPS, SplitParams(seed=8))


def test_official_testing_patients_are_the_test_set() -> None:
    fixed = [f"patient{i:03d}" for i in range(91, 101)]
    splits = patient_splits(GROUPS, SplitParams(val=0.1, test=0.2, seed=0), fixed_test=fixed)
    assert splits["test"] == sorted(fixed)
    assert not set(fixed) & (set(splits["train"]) | set(splits["val"]))
    assert len(splits["val"]) == 10  # round(10% of 18) = 2 per group, 5 groups


def test_tiny_dataset_keeps_training_patients() -> None:
    splits = patient_splits({"a": "NOR", "b": "NOR"}, SplitParams(val=0.0, test=0.2))
    assert splits["train"] and len(splits["test"]) == 1
    with pytest.raises(SeglabError, match="fixed test patients"):
        patient_splits({"a": "NOR"}, SplitParams(), fixed_test=["zz"])


def test_a_split_left_empty_is_refused_in_one_line() -> None:
    # the 10-patient phantom: 5 groups of 2, each gives one to test and has none to spare
    ten = {f"p{i:02d}": g for i, g in enumerate(["NOR", "MINF", "DCM", "HCM", "RV"] * 2)}
    with pytest.raises(SeglabError) as caught:
        patient_splits(ten, SplitParams(val=0.1, test=0.2))
    assert str(caught.value) == (
        "split.val 0.1 leaves val empty: the 10 patients are split per group (5 groups of 2), "
        "each keeping at least one for train and one for test; add patients or set split.val: 0"
    )
    one_each = {f"p{i}": g for i, g in enumerate(["NOR", "MINF", "DCM", "HCM", "RV"])}
    with pytest.raises(SeglabError, match="split.test 0.2 leaves test empty: the 5 patients"):
        patient_splits(one_each, SplitParams(val=0.0, test=0.2))
    with pytest.raises(SeglabError, match="split.val 0.1 leaves val empty"):
        patient_splits({"a": "NOR", "b": "NOR"}, SplitParams(val=0.1, test=0.2))
    # asked for none: none is no surprise
    assert patient_splits(one_each, SplitParams(val=0.0, test=0.0))["train"] == sorted(one_each)


def test_rounding_note_says_how_far_the_fractions_moved() -> None:
    twenty = {f"p{i:02d}": g for i, g in enumerate(["NOR", "MINF", "DCM", "HCM", "RV"] * 4)}
    params = SplitParams(val=0.1, test=0.2)
    splits = patient_splits(twenty, params)
    assert rounding_note(splits, params) == (
        "split rounded per group, at least one patient each: val 5/20 patients (25%, asked 0.1), "
        "test 5/20 patients (25%, asked 0.2)"
    )
    assert rounding_note(patient_splits(GROUPS, params), params) == ""
    fixed = [f"patient{i:03d}" for i in range(91, 101)]
    with_fixed = patient_splits(GROUPS, params, fixed_test=fixed)  # val: 2 of each group's 18
    assert rounding_note(with_fixed, params, fixed_test=True) == (
        "split rounded per group, at least one patient each: val 10/90 patients (11%, asked 0.1)"
    )


def _meta(groups: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"patient": p, "group": g} for p, g in groups.items() for _ in range(3)])


def test_folds_are_patient_level_stratified_balanced_and_seeded() -> None:
    groups = {f"p{i:02d}": g for i, g in enumerate(["NOR", "MINF", "DCM", "HCM", "RV"] * 4)}
    folds = patient_folds(_meta(groups), 3, seed=0)
    assert set(folds) == set(groups) and set(folds.values()) == {0, 1, 2}
    sizes = np.bincount(list(folds.values()))
    assert sizes.max() - sizes.min() <= 1
    for group in set(groups.values()):
        per_group = np.bincount([folds[p] for p in groups if groups[p] == group], minlength=3)
        assert per_group.max() - per_group.min() <= 1, group
    assert patient_folds(_meta(groups), 3, seed=0) == folds
    assert patient_folds(_meta(groups), 3, seed=1) != folds
    with pytest.raises(ConfigError, match="30 folds need 30 patients at least; there are 20"):
        patient_folds(_meta(groups), 30, seed=0)
