"""The gate of a corrector, chosen on rows with ground truth (``correctors.gate: auto``).

Every gate of :func:`candidates` (the validity test on or off, the plausibility test off or
below each of :data:`THRESHOLDS`, and ``nothing``, which keeps every input) is applied to the
corrector's output; the chosen one is the most anatomically valid among those that cost at
most ``tolerance`` of the input's mean Dice (ties to the higher Dice, then to the earlier
candidate). ``nothing`` always qualifies, so a corrector that earns no change within the
tolerance is gated to its input: the gated figures never fall below it by more than that. The
corrector stage runs it on ACDCSeg's validation rows, never on its test rows: a gate that
helps on weak inputs (take every valid correction) is the wrong one on strong inputs (the
plausibility test then replaces good masks the NVAE finds unusual), and only held-out rows
with ground truth can tell which the corrector faces.

Example::

    rows = CorrectedRows(before, after, valid_before, valid_after, plausible)
    scores = score_gates(rows, val.label, val.spacing)
    chosen = choose_gate(scores, tolerance=0.002)  # a GateParams; scores[chosen.name]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seglab.config import GateParams
from seglab.data.store import SliceSet
from seglab.inference.correction import correct, gate, plausibility
from seglab.metrics.anatomy import check_slices
from seglab.metrics.emptied import check_against
from seglab.metrics.overlap import overlap, summarize_overlap

#: The plausibility thresholds tried, with the test off besides.
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
#: The figures of each gate (and of the input and the plain correction) on the rows scored.
FIGURES = ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "anatomical_validity")


@dataclass(frozen=True)
class CorrectedRows:
    """One split's rows before and after correction, judged as the gate judges them (without
    ground truth): per-slice validity of input and output, and the input's plausibility."""

    before: np.ndarray  # uint8 [N, H, W]: the segmenter's masks
    after: np.ndarray  # uint8 [N, H, W]: the corrector's
    valid_before: np.ndarray  # bool [N]
    valid_after: np.ndarray  # bool [N]: an output that erases its input's heart is invalid
    plausibility: np.ndarray  # float [N]: the input against its NVAE reconstruction


def corrected_rows(
    corrector: torch.nn.Module,
    gt_nvae: torch.nn.Module,
    rows: SliceSet,
    source: str,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> CorrectedRows:
    """One split's rows (their ``source`` extra: masks, or 3-grams whose middle map is the
    input) corrected and judged as `seglab correct` judges them, without ground truth: an output
    that erases its input's heart is invalid (and the gate never takes it)."""
    stored = rows.extra[source]
    before = stored[:, 1] if source == "context" else stored
    after = correct(corrector, stored, batch_size=batch_size, device=device)
    return CorrectedRows(
        before,
        after,
        check_slices(before, rows.spacing).valid,
        check_against(after, before, rows.spacing).valid,
        plausibility(gt_nvae, before, batch_size=batch_size, device=device),
    )


def candidates() -> list[GateParams]:
    """Every gate, validity alone first and ``nothing`` (both tests off) last."""
    tested = [
        GateParams(validity=validity, plausibility_below=below)
        for validity in (True, False)
        for below in (None, *THRESHOLDS)
        if validity or below is not None
    ]
    return [*tested, GateParams(validity=False, plausibility_below=None)]


def score_gates(
    rows: CorrectedRows, truth: np.ndarray, spacing: np.ndarray
) -> dict[str, dict[str, float]]:
    """Dice and anatomical validity against ``truth`` of the input (``input``), the plain
    correction (``plain``) and every candidate gate (by :attr:`GateParams.name`, with the
    number of rows it ``taken``). Dice is per slice, as every report has it; validity counts a
    slice emptied where the truth has a heart as invalid."""
    valid = {
        "input": check_against(rows.before, truth, spacing).valid,
        "plain": check_against(rows.after, truth, spacing).valid,
    }

    def figures(labels: np.ndarray, valid_rows: np.ndarray) -> dict[str, float]:
        dice = summarize_overlap(overlap(labels, truth, spacing, hd95=False))
        return {k: float(dice[k]) for k in FIGURES[:-1]} | {
            "anatomical_validity": float(valid_rows.mean()) if len(valid_rows) else float("nan")
        }

    scores = {
        "input": figures(rows.before, valid["input"]),
        "plain": figures(rows.after, valid["plain"]),
    }
    for params in candidates():
        gated = gate(
            rows.before,
            rows.after,
            rows.valid_before,
            rows.valid_after,
            rows.plausibility,
            params,
        )
        # Validity is per slice: a gated row is valid as its input or its correction is.
        valid_rows = np.where(gated.taken, valid["plain"], valid["input"])
        scores[params.name] = figures(gated.labels, valid_rows) | {
            "taken": float(gated.taken.sum())
        }
    return scores


def choose_gate(scores: dict[str, dict[str, float]], tolerance: float) -> GateParams:
    """The most valid candidate whose Dice is within ``tolerance`` of the input's, from
    :func:`score_gates` of held-out rows (``nothing`` at least: it keeps the input's Dice)."""
    floor = scores["input"]["dice_mean"] - tolerance
    within = [g for g in candidates() if scores[g.name]["dice_mean"] >= floor]
    return max(
        within,
        key=lambda g: (scores[g.name]["anatomical_validity"], scores[g.name]["dice_mean"]),
    )
