"""Patient-level splits: a patient's slices never sit in two splits.

The study split slices at random, so one patient's neighbouring slices landed in both train
and test. Here every split is a set of patients, stratified by group and seeded, and an
official ``testing`` subset, when present, is the test set as the challenge intended.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from seglab.config import SplitParams
from seglab.errors import ConfigError, SeglabError

SPLITS = ("train", "val", "test")


def patient_splits(
    groups: Mapping[str, str],
    params: SplitParams,
    fixed_test: Sequence[str] = (),
) -> dict[str, list[str]]:
    """Assign every patient id in ``groups`` (id -> group) to train, val or test.

    Within each group the patients are shuffled with ``params.seed`` and cut by the val and
    test fractions (rounded, at least one per split when the group is large enough to spare
    one). Patients in ``fixed_test`` go to test; the rest is then split into train and val
    with val's share of the whole taken from the remaining patients.

    A split asked for (a positive fraction) that gets no patient is refused with one line: with
    5 groups of 2 patients, each group gives one to test and has none to spare for val.
    :func:`rounding_note` says how far the rounding moved the fractions.
    """
    fixed = set(fixed_test)
    unknown = fixed - set(groups)
    if unknown:
        raise SeglabError(f"fixed test patients not in the dataset: {sorted(unknown)}")
    test_frac = 0.0 if fixed else params.test
    by_group: dict[str, list[str]] = defaultdict(list)
    for pid in sorted(groups):
        if pid not in fixed:
            by_group[groups[pid]].append(pid)

    rng = np.random.default_rng(params.seed)
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    out["test"].extend(sorted(fixed))
    for group in sorted(by_group):
        ids = list(by_group[group])
        rng.shuffle(ids)
        n_test = _share(len(ids), test_frac)
        n_val = _share(len(ids) - n_test, params.val / max(1e-9, 1.0 - test_frac))
        out["test"].extend(ids[:n_test])
        out["val"].extend(ids[n_test : n_test + n_val])
        out["train"].extend(ids[n_test + n_val :])
    if not out["train"]:
        raise SeglabError(f"{len(groups)} patients are too few to leave any for training")
    asked = {"val": params.val, "test": test_frac}
    for name in ("val", "test"):
        if asked[name] > 0 and not out[name]:
            also = " and one for test" if name == "val" and test_frac > 0 else ""
            raise SeglabError(
                f"split.{name} {asked[name]:g} leaves {name} empty: the {len(groups)} patients "
                f"are split per group ({_group_sizes(by_group)}), each keeping at least one for "
                f"train{also}; add patients or set split.{name}: 0"
            )
    return {name: sorted(ids) for name, ids in out.items()}


def rounding_note(
    splits: Mapping[str, Sequence[str]], params: SplitParams, fixed_test: bool = False
) -> str:
    """One line on how per-group rounding moved the val and test fractions (empty when each
    holds the rounded share it was asked for). With ``fixed_test`` the test set is given and
    val's share is of the other patients."""
    total = sum(len(ids) for ids in splits.values())
    asked = (("val", params.val),) if fixed_test else (("val", params.val), ("test", params.test))
    pool = total - len(splits["test"]) if fixed_test else total
    moved = [
        f"{name} {len(splits[name])}/{pool} patients ({len(splits[name]) / pool:.0%}, "
        f"asked {fraction:g})"
        for name, fraction in asked
        if pool and len(splits[name]) != round(pool * fraction)
    ]
    if not moved:
        return ""
    return "split rounded per group, at least one patient each: " + ", ".join(moved)


def _group_sizes(by_group: Mapping[str, Sequence[str]]) -> str:
    sizes = sorted(len(ids) for ids in by_group.values())
    if not sizes:
        return "no group"
    span = str(sizes[0]) if sizes[0] == sizes[-1] else f"{sizes[0]}-{sizes[-1]}"
    return f"{len(sizes)} group{'s' if len(sizes) > 1 else ''} of {span}"


def _share(n: int, fraction: float) -> int:
    """Rounded share of ``n`` for a split: at least one when asked for and one can be spared."""
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def patient_folds(meta: pd.DataFrame, folds: int, seed: int) -> dict[str, int]:
    """Fold (0..K-1) of every patient in ``meta``: stratified by group, seeded.

    Within each group the patients are shuffled and dealt out in turn, continuing from where the
    previous group stopped, so folds differ in size by at most one patient.
    """
    groups = meta.drop_duplicates("patient").set_index("patient")["group"].sort_index()
    if len(groups) < folds:
        raise ConfigError(f"{folds} folds need {folds} patients at least; there are {len(groups)}")
    rng = np.random.default_rng(seed)
    out: dict[str, int] = {}
    for group in sorted(set(groups)):
        ids = sorted(groups.index[groups == group])
        rng.shuffle(ids)
        for pid in ids:
            out[pid] = len(out) % folds
    return out
