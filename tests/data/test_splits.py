from __future__ import annotations

import pytest

from seglab.config import SplitParams
from seglab.data.splits import patient_splits
from seglab.errors import SeglabError

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
    splits = patient_splits({"a": "NOR", "b": "NOR"}, SplitParams(val=0.1, test=0.2))
    assert splits["train"] and len(splits["test"]) == 1
    with pytest.raises(SeglabError, match="fixed test patients"):
        patient_splits({"a": "NOR"}, SplitParams(), fixed_test=["zz"])
