"""The correction study's report (DVC ``correction_report``, ``seglab evaluate correction``).

Reads ACDCSeg's test rows and every corrector's ``<predictions>/<variant>.npz`` (written by
``train_corrector``), and measures, against the ground truth, the segmenters' masks before
correction and after each corrector, plain and gated (``seglab.evaluation.correction_report``).
QC scores: ``plausibility`` (the NVAE of ground-truth masks reproducing the input) and each
corrector's ``<variant>_agreement`` (how little it changed the input).

Outputs: ``<correction.out>/`` (report.md, tables, figures; also the run's artifacts),
``<correction.metrics>`` (the summary `dvc metrics diff` compares) and ``<correction.plots>/``
(CSV data of the DVC plots). MLflow: one run ``correction-report`` in ``acdc-correctors`` with the
summary's figures as metrics (``<method>.dice_mean``, ``qc.plausibility.auroc``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from seglab.config import AcdcDataParams, CardiacParams
from seglab.data.store import load_split
from seglab.evaluation.correction_report import correction_report
from seglab.io import write_record
from seglab.stages.artifacts import CORRECTORS_EXPERIMENT as EXPERIMENT
from seglab.stages.artifacts import load_predictions
from seglab.tracking import log_artifact, log_metrics, tracked_run

RUN_NAME = "correction-report"


def _numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested summary, keyed ``a.b.c`` (MLflow metrics)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= _numbers(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if np.isfinite(value):
                out[name] = float(value)
    return out


def provenance(params: CardiacParams) -> str:
    """The line that opens the report: which profile and data made its figures."""
    line = f"Made with profile `{params.profile}` on `{params.acdc.raw}`"
    if Path(params.acdc.raw) == Path(AcdcDataParams().raw):
        return line + (
            " (the generated phantom): these figures show that the pipeline runs, not the "
            "study's results; README, 'Results on real ACDC', has those."
        )
    return line + "."


def _gates_line(gates: dict[str, str], auto: bool) -> str:
    """Which gate each ``<variant>-gated`` row used, and who chose it."""
    how = "chosen on ACDCSeg's validation rows" if auto else "fixed by correctors.gate"
    return f"Gates ({how}): " + ", ".join(f"{v}: {g}" for v, g in gates.items()) + "."


def evaluate_correction(
    params: CardiacParams, *, root: Path = Path("."), params_file: Path | None = None
) -> dict[str, Any]:
    """Measure every corrector on ACDCSeg's test rows; returns the summary written to
    ``correction.metrics``."""
    root = Path(root)
    cfg, report = params.correctors, params.correction
    test = load_split(root / params.acdcseg.out / "test.npz")
    before = test.extra["pred"]
    after: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    gates: dict[str, str] = {}
    for variant in cfg.variants:
        arrays = load_predictions(root / cfg.predictions / f"{variant}.npz", test)
        after[variant] = arrays["after"]
        after[f"{variant}-gated"] = arrays["gated"]
        gates[variant] = str(arrays["gate"])
        scores.setdefault("plausibility", arrays["plausibility"])
        scores[f"{variant}_agreement"] = arrays["agreement"]
    out_dir = root / report.out
    with tracked_run(
        params.tracking,
        EXPERIMENT,
        RUN_NAME,
        root=root,
        params={"correction": report, "gate": gates, "variants": list(cfg.variants)},
        datasets={"acdcseg": Path(params.acdcseg.out)},
        params_file=params_file,
        tags={"role": "report"},
    ):
        summary = correction_report(
            test.meta,
            test.image,
            test.label,
            before,
            after,
            scores,
            report,
            out_dir,
            root / report.plots,
            f"{provenance(params)} {_gates_line(gates, cfg.gate == 'auto')}",
        )
        log_metrics(_numbers(summary))
        log_artifact(out_dir)
        write_record(root / report.metrics, summary)
    return summary
