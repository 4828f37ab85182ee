"""Choosing a corrector's gate on rows with ground truth, on generated hearts."""

from __future__ import annotations

import numpy as np
import pytest

from seglab.config import GateParams
from seglab.data.labels import LV
from seglab.data.phantom.masks import heart_masks
from seglab.evaluation.gate_choice import (
    FIGURES,
    THRESHOLDS,
    CorrectedRows,
    candidates,
    choose_gate,
    score_gates,
)
from seglab.metrics.anatomy import check_slices
from seglab.metrics.emptied import check_against

SIZE = 32
SPACING = np.full((8, 2), 1.5)


def rows() -> tuple[CorrectedRows, np.ndarray]:
    """Eight slices: 0-3 hold a stray LV blob (the correction removes it), 4-5 are right (the
    correction adds one), 6-7 are right (the correction erases the heart)."""
    truth = heart_masks(8, SIZE, seed=3)
    before, after = truth.copy(), truth.copy()
    before[:4, 1:5, 1:5] = LV  # a second LV: invalid
    after[4:6, 1:5, 1:5] = LV
    after[6:] = 0
    plausible = np.array([0.9, 0.9, 0.6, 0.6, 0.7, 0.95, 0.95, 0.4])
    return (
        CorrectedRows(
            before,
            after,
            check_slices(before, SPACING).valid,
            check_against(after, before, SPACING).valid,
            plausible,
        ),
        truth,
    )


def test_candidates_are_every_gate_and_keeping_every_input() -> None:
    names = [g.name for g in candidates()]
    assert len(names) == len(set(names)) == 2 * len(THRESHOLDS) + 2
    assert names[0] == "validity" and names[-1] == "nothing"
    assert candidates()[-1] == GateParams(validity=False, plausibility_below=None)
    assert GateParams().name == "validity_or_plausibility_below_0.8"


def test_every_gate_is_scored_per_slice_against_the_truth() -> None:
    corrected, truth = rows()
    scores = score_gates(corrected, truth, SPACING)
    assert set(scores) == {"input", "plain", *(g.name for g in candidates())}
    assert all(set(FIGURES) <= set(s) for s in scores.values())
    # Half the inputs hold a stray blob; the plain correction adds two and erases two hearts.
    assert scores["input"]["anatomical_validity"] == pytest.approx(0.5)
    assert scores["plain"]["anatomical_validity"] == pytest.approx(4 / 8)
    # Validity takes the four cleaned slices only: every slice valid, the truth everywhere.
    assert scores["validity"]["taken"] == 4
    assert scores["validity"]["anatomical_validity"] == 1.0
    assert scores["validity"]["dice_mean"] == pytest.approx(1.0)
    # Plausibility below 0.8 takes slices 2, 3 and 4 (7 is an erasure: never taken).
    below = scores["plausibility_below_0.8"]
    assert below["taken"] == 3 and below["anatomical_validity"] == pytest.approx(5 / 8)
    # Nothing taken: the input's figures exactly.
    assert scores["nothing"] == scores["input"] | {"taken": 0.0}


def test_the_most_valid_gate_within_the_tolerance_is_chosen() -> None:
    names = [g.name for g in candidates()]
    scores = {n: {"dice_mean": 0.80, "anatomical_validity": 0.99} for n in names}
    scores["input"] = scores["nothing"] = {"dice_mean": 0.85, "anatomical_validity": 0.80}
    scores["plausibility_below_0.5"] = {"dice_mean": 0.849, "anatomical_validity": 0.90}
    scores["validity_or_plausibility_below_0.9"] = {"dice_mean": 0.851, "anatomical_validity": 0.95}
    assert choose_gate(scores, 0.002).name == "validity_or_plausibility_below_0.9"
    scores["validity_or_plausibility_below_0.9"]["dice_mean"] = 0.847
    assert choose_gate(scores, 0.002).name == "plausibility_below_0.5"
    # No gate that takes anything is within the tolerance: every input is kept.
    assert choose_gate(scores, 0.0).name == "nothing"


def test_ties_go_to_the_higher_dice_then_to_the_earlier_candidate() -> None:
    names = [g.name for g in candidates()]
    scores = {n: {"dice_mean": 0.85, "anatomical_validity": 0.9} for n in names}
    scores["input"] = scores["nothing"] = {"dice_mean": 0.85, "anatomical_validity": 0.8}
    assert choose_gate(scores, 0.002).name == "validity"
    scores["plausibility_below_0.6"]["dice_mean"] = 0.851
    assert choose_gate(scores, 0.002).name == "plausibility_below_0.6"
