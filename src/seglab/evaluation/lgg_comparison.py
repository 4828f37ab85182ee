"""The brain study's architecture comparison: one table and three figures over the
architectures' metrics files. Apart from :mod:`seglab.evaluation.lgg_report` (which scores and
times the networks) so that comparing needs neither torch nor MONAI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: Test figures of every architecture, first in every result (the project's metric keys first).
KEYS = (
    "iou",
    "dice_mean",
    "accuracy",
    "iou_volume",
    "dice_volume",
    "iou_tumour_slices",
    "dice_tumour_slices",
    "accuracy_tumour_slices",
    "accuracy_empty_slices",
    "empty_slices_false_positive",
)
#: What an architecture costs: training, size and speed.
COST_KEYS = (
    "train_seconds",
    "epochs",
    "epochs_to_best",
    "params_count",
    "model_mb",
    "slices_per_second",
)
#: Columns of the comparison table, in order.
TABLE_COLUMNS = (
    "name",
    "iou",
    "dice_mean",
    "iou_volume",
    "dice_volume",
    "accuracy",
    "iou_tumour_slices",
    "accuracy_tumour_slices",
    "accuracy_empty_slices",
    "empty_slices_false_positive",
    "train_seconds",
    "epochs",
    "epochs_to_best",
    "params_count",
    "model_mb",
    "slices_per_second",
)


def comparison_table(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per architecture (its metrics file), :data:`TABLE_COLUMNS` first, by IoU.

    An undefined figure (``null`` in the metrics file: no tumour predicted or present) is NaN.
    """
    frame = pd.DataFrame(list(results))
    missing = [c for c in TABLE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"results lack {', '.join(missing)}")
    numeric = list(TABLE_COLUMNS[1:])
    frame[numeric] = frame[numeric].astype(float)
    rest = [c for c in frame.columns if c not in TABLE_COLUMNS]
    frame = frame[[*TABLE_COLUMNS, *rest]]
    return frame.sort_values("iou", ascending=False, na_position="last").reset_index(drop=True)


_FORMATS = {
    "train_seconds": "{:.0f}",
    "params_count": "{:,.0f}",
    "model_mb": "{:.1f}",
    "slices_per_second": "{:.1f}",
    "epochs": "{:.0f}",
    "epochs_to_best": "{:.0f}",
}


def markdown_table(table: pd.DataFrame, columns: Sequence[str] = TABLE_COLUMNS) -> str:
    """A GitHub-flavoured markdown table of ``columns`` (ratios to 4 decimals)."""

    def cell(column: str, value: Any) -> str:
        if isinstance(value, float | int | np.floating | np.integer) and not isinstance(
            value, bool
        ):
            if np.isnan(value):
                return "-"
            return _FORMATS.get(column, "{:.4f}").format(value)
        return str(value)

    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c == "name" else "---:" for c in columns) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _scatter(table: pd.DataFrame, x: str, xlabel: str, title: str, log_x: bool) -> Figure:
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(table[x], table["iou"], color="tab:blue")
    for _, row in table.iterrows():
        ax.annotate(
            row["name"], (row[x], row["iou"]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test IoU (per slice)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def iou_vs_time_figure(table: pd.DataFrame) -> Figure:
    """Test IoU against training wall time, one point per architecture."""
    return _scatter(table, "train_seconds", "training time (s)", "IoU vs training time", False)


def iou_vs_params_figure(table: pd.DataFrame) -> Figure:
    """Test IoU against parameter count (log scale), one point per architecture."""
    return _scatter(table, "params_count", "parameters", "IoU vs parameters", True)


def model_size_figure(table: pd.DataFrame) -> Figure:
    """Bars of each architecture's weights on disk (MiB)."""
    ordered = table.sort_values("model_mb")
    fig = Figure(figsize=(6.5, 4.0), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(ordered["name"], ordered["model_mb"], color="tab:gray")
    ax.bar_label(bars, fmt="%.1f", padding=3, fontsize=8)
    ax.margins(x=0.12)  # room for the largest bar's label
    ax.set_xlabel("model size on disk (MiB)")
    ax.set_title("Model size")
    return fig
