"""Clinical indices from end-diastolic (ED) and end-systolic (ES) label volumes.

Volumes are voxel counts times the voxel volume (mm^3, from the volume's spacing) / 1000,
in ml; ejection fraction EF = (EDV - ESV) / EDV * 100; myocardial mass = ED myocardium
volume x 1.05 g/ml. Labels: 1 RV cavity, 2 LV myocardium, 3 LV cavity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seglab.data.labels import LV, MYO, RV

MYOCARDIUM_DENSITY_G_PER_ML = 1.05

INDICES: tuple[str, ...] = (
    "lv_edv_ml",
    "lv_esv_ml",
    "lv_ef_pct",
    "rv_edv_ml",
    "rv_esv_ml",
    "rv_ef_pct",
    "myo_mass_g",
)


def _volume_ml(labels: np.ndarray, label: int, voxel_mm3: float) -> float:
    return float(np.count_nonzero(labels == label)) * voxel_mm3 / 1000.0


def _ejection_fraction(edv: float, esv: float) -> float:
    return (edv - esv) / edv * 100.0 if edv > 0 else float("nan")


def clinical_indices(
    ed: np.ndarray, es: np.ndarray, spacing: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """LV/RV end-diastolic and end-systolic volumes (ml), ejection fractions (%), MYO mass (g).

    ``ed`` and ``es`` are [x, y, z] label volumes of one patient on the same grid,
    ``spacing`` its voxel size in mm along those three axes. EF is NaN when the EDV is 0.
    """
    ed, es = np.asarray(ed), np.asarray(es)
    if ed.ndim != 3 or es.ndim != 3:
        raise ValueError(
            f"ED and ES must be 3D label volumes, got shapes {ed.shape} and {es.shape}"
        )
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape != (3,) or not (spacing > 0).all():
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing.tolist()}")
    voxel = float(np.prod(spacing))
    lv_edv, lv_esv = _volume_ml(ed, LV, voxel), _volume_ml(es, LV, voxel)
    rv_edv, rv_esv = _volume_ml(ed, RV, voxel), _volume_ml(es, RV, voxel)
    return {
        "lv_edv_ml": lv_edv,
        "lv_esv_ml": lv_esv,
        "lv_ef_pct": _ejection_fraction(lv_edv, lv_esv),
        "rv_edv_ml": rv_edv,
        "rv_esv_ml": rv_esv,
        "rv_ef_pct": _ejection_fraction(rv_edv, rv_esv),
        "myo_mass_g": _volume_ml(ed, MYO, voxel) * MYOCARDIUM_DENSITY_G_PER_ML,
    }


@dataclass(frozen=True)
class ClinicalErrors:
    """Predicted vs ground-truth clinical indices over a set of patients."""

    per_patient: pd.DataFrame
    """One row per patient (index): ``<index>_true``, ``_pred``, ``_error`` (pred - true),
    ``_abs_error`` and ``_rel_error_pct`` (|pred - true| / |true| x 100, NaN when true is 0)."""
    mean_absolute_error: dict[str, float]
    """``<index>_mae`` for each index, in its own unit (NaN values skipped)."""


def clinical_errors(
    predicted: Mapping[str, Mapping[str, float]], truth: Mapping[str, Mapping[str, float]]
) -> ClinicalErrors:
    """Compare ``clinical_indices`` of predictions with those of the ground truth, per patient.

    Both mappings go from patient id to an indices dict and must cover the same patients.
    """
    if not truth:
        raise ValueError("no patients to compare")
    if set(predicted) != set(truth):
        missing = sorted(set(truth) ^ set(predicted))
        raise ValueError(f"predicted and ground-truth patients differ: {missing}")
    rows = {}
    for patient in sorted(truth):
        row: dict[str, float] = {}
        for name in INDICES:
            true, pred = float(truth[patient][name]), float(predicted[patient][name])
            error = pred - true
            row[f"{name}_true"] = true
            row[f"{name}_pred"] = pred
            row[f"{name}_error"] = error
            row[f"{name}_abs_error"] = abs(error)
            row[f"{name}_rel_error_pct"] = abs(error) / abs(true) * 100.0 if true else float("nan")
        rows[patient] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "patient"
    mae = {f"{name}_mae": float(frame[f"{name}_abs_error"].mean()) for name in INDICES}
    return ClinicalErrors(frame, mae)
