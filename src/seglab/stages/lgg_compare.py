"""The brain study's comparison stage (`seglab lgg compare`): one table (markdown and CSV) and
three figures over the architectures' metrics files, logged as one MLflow run. Apart from the
training stage so that it imports neither torch, Lightning nor MONAI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seglab.config import BrainParams, RecipeParams
from seglab.errors import DataError
from seglab.evaluation.lgg_comparison import (
    COST_KEYS,
    KEYS,
    comparison_table,
    iou_vs_params_figure,
    iou_vs_time_figure,
    markdown_table,
    model_size_figure,
)
from seglab.io import atomic_dir
from seglab.stages.artifacts import LGG_DATASET, LGG_EXPERIMENT
from seglab.tracking import log_artifact, tracked_run

COMPARISON_RUN = "comparison"
#: The comparison's files in ``architectures.report`` (DVC outputs and MLflow artifacts).
REPORT_FILES = {
    "table_md": "comparison.md",
    "table_csv": "comparison.csv",
    "iou_vs_time": "iou_vs_train_seconds.png",
    "iou_vs_params": "iou_vs_params.png",
    "model_size": "model_size.png",
}


def _read_result(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(path, "architecture metrics not found (run its train stage first)")
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a readable metrics file ({exc})") from exc
    if not isinstance(result, dict) or any(k not in result for k in (*KEYS, *COST_KEYS)):
        raise DataError(path, "not an LGG architecture metrics file (stale: run `dvc repro`)")
    return result


def _settings_line(results: list[dict[str, Any]]) -> str:
    """Where and how the rows were made (the same for every row of one pipeline run)."""
    fields = (
        "device",
        "precision",
        "image_size",
        "encoder_weights",
        "max_epochs",
        "batch_size",
        *RecipeParams.setting_keys(),
        "keep",
        "limit_train_batches",
        "early_stopping_patience",
        "train_slices",
    )
    parts = []
    for field in fields:
        values = sorted({str(r.get(field)) for r in results})
        parts.append(f"{field} {' / '.join(values)}")
    return "; ".join(parts)


def compare_lgg(
    params: BrainParams, *, root: Path = Path("."), params_file: Path | None = None
) -> str:
    """Table (markdown + CSV) and figures over every architecture; returns the markdown."""
    archs = params.architectures
    root = Path(root)
    results = [_read_result(archs.metrics_path(name, root)) for name in archs.names]
    table = comparison_table(results)
    first = results[0]
    markdown = "\n".join(
        [
            "# LGG architectures: test split",
            "",
            f"Test split: slices {first['slices']} ({first['tumour_slices']} with tumour), "
            f"patients {first['patients']}. Settings: {_settings_line(results)}.",
            "",
            markdown_table(table),
            "",
        ]
    )
    report = root / archs.report
    with atomic_dir(report) as tmp:
        (tmp / REPORT_FILES["table_md"]).write_text(markdown)
        table.to_csv(tmp / REPORT_FILES["table_csv"], index=False, float_format="%.6g")
        for key, figure in (
            ("iou_vs_time", iou_vs_time_figure(table)),
            ("iou_vs_params", iou_vs_params_figure(table)),
            ("model_size", model_size_figure(table)),
        ):
            figure.savefig(tmp / REPORT_FILES[key], dpi=120)
    with tracked_run(
        params.tracking,
        LGG_EXPERIMENT,
        COMPARISON_RUN,
        root=root,
        params={"names": ",".join(archs.names), "profile": params.profile},
        datasets={LGG_DATASET: Path(params.lgg.prepared)},
        params_file=params_file,
        tags={
            "role": "comparison",
            **{f"run.{r['name']}": str(r.get("run_id")) for r in results},
        },
    ):
        for file in REPORT_FILES.values():
            log_artifact(report / file, "comparison")
    return markdown
