"""The ``prepare_acdc`` and ``prepare_lgg`` stages: the data layer's preparation, the metrics'
check of the prepared ground truth (ACDC), and an MLflow run with the figures of what was made.

Kept here (above both layers) so that ``seglab.data`` never imports ``seglab.metrics``.
The run (experiment ``data-preparation``, named ``prepare-<study>``) carries the lineage of the
prepared dataset (its DVC md5, listed as its input dataset) and, as metrics, the patients and
slices per split, the crop's coverage of the heart and the ground truth's anatomical validity:
what ``mlflow run . -e prepare_acdc`` logs is what ``dvc repro prepare_acdc`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seglab.config import AcdcDataParams, LggDataParams, TrackingParams
from seglab.data.prepare_acdc import prepare_acdc
from seglab.data.prepare_lgg import prepare_lgg
from seglab.metrics.anatomy import anatomy_qc
from seglab.tracking import log_metrics, tracked_run

EXPERIMENT = "data-preparation"


def meta_figures(meta: dict[str, Any]) -> dict[str, float]:
    """The numbers of a prepared dataset's ``meta.json``: patients and slices per split, crop
    coverage, ground-truth validity per split."""
    figures: dict[str, float] = {}
    for split, patients in meta.get("splits", {}).items():
        figures[f"{split}_patients"] = len(patients)
    for split, count in meta.get("slices", {}).items():
        figures[f"{split}_slices"] = count
    for key in ("crop_coverage_min", "crop_coverage_mean"):
        if key in meta:
            figures[key] = meta[key]
    for split, qc in meta.get("qc", {}).items():
        figures[f"{split}_gt_validity"] = qc["anatomical_validity"]
    return figures


def prepare_stage(
    study: str,
    params: AcdcDataParams | LggDataParams,
    tracking: TrackingParams,
    *,
    params_file: Path | None = None,
) -> str:
    """Prepare ``study`` (``acdc`` or ``lgg``), then log what was made; returns the summary.
    Paths are relative to the current folder (the project), as the data layer reads them."""
    root = Path(".")
    if isinstance(params, AcdcDataParams):
        summary = prepare_acdc(params, qc=anatomy_qc)
    else:
        summary = prepare_lgg(params)
    prepared = Path(params.prepared)
    meta = json.loads((Path(root) / prepared / "meta.json").read_text())
    with tracked_run(
        tracking,
        EXPERIMENT,
        f"prepare-{study}",
        root=root,
        params={"raw": str(params.raw), "prepared": str(prepared), "prepare": params.prepare},
        datasets={f"{study}_prepared": prepared},
        params_file=params_file,
        tags={"study": study},
    ):
        log_metrics(meta_figures(meta))
    return summary
