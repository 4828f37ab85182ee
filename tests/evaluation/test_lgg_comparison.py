"""The LGG comparison on constructed metrics files: row order, the markdown table, the figures;
and that comparing imports no deep-learning library."""

from __future__ import annotations

import subprocess
import sys

import pytest
from matplotlib.figure import Figure

from seglab.evaluation.lgg_comparison import (
    COST_KEYS,
    KEYS,
    TABLE_COLUMNS,
    comparison_table,
    iou_vs_params_figure,
    iou_vs_time_figure,
    markdown_table,
    model_size_figure,
)


def _results() -> list[dict[str, object]]:
    base = {k: 0.5 for k in KEYS} | {k: 1.0 for k in COST_KEYS}
    return [
        base | {"name": "unet-resnet18", "iou": 0.6, "params_count": 14e6, "model_mb": 54.8},
        base | {"name": "pspnet-resnet18", "iou": 0.4, "params_count": 11e6, "model_mb": 43.3},
        base
        | {"name": "unet-resnet101", "iou": 0.7, "params_count": 51e6, "model_mb": 197.1}
        | {"train_seconds": 900.0, "extra": "kept"},
    ]


def test_comparison_table_orders_rows_by_iou_and_keeps_extra_columns() -> None:
    table = comparison_table(_results())
    assert table["name"].tolist() == ["unet-resnet101", "unet-resnet18", "pspnet-resnet18"]
    assert list(table.columns)[: len(TABLE_COLUMNS)] == list(TABLE_COLUMNS)
    assert "extra" in table.columns
    with pytest.raises(ValueError, match="lack iou"):
        comparison_table([{k: v for k, v in _results()[0].items() if k != "iou"}])


def test_markdown_table_has_a_row_per_architecture_and_readable_numbers() -> None:
    results = _results()
    results[1]["iou"] = None  # strict JSON writes an undefined figure as null
    table = comparison_table(results)
    assert table["name"].tolist()[-1] == "pspnet-resnet18" and table["iou"].dtype == float
    text = markdown_table(table)
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| name | iou | dice_mean")
    assert "| unet-resnet101 | 0.7000 |" in lines[2]
    assert "51,000,000" in lines[2] and "197.1" in lines[2] and "| 900 |" in lines[2]
    assert lines[4].startswith("| pspnet-resnet18 | - |")


def test_figures_show_one_mark_per_architecture() -> None:
    table = comparison_table(_results())
    for make in (iou_vs_time_figure, iou_vs_params_figure):
        fig = make(table)
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert len(ax.collections[0].get_offsets()) == 3
        assert {t.get_text() for t in ax.texts} == set(table["name"])
    assert iou_vs_params_figure(table).axes[0].get_xscale() == "log"
    bars = model_size_figure(table).axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == [
        "pspnet-resnet18",
        "unet-resnet18",
        "unet-resnet101",
    ]


def test_the_comparison_stage_imports_no_deep_learning_library() -> None:
    """`seglab lgg compare` reads JSON files and draws: it must not pay seconds of torch, Lightning
    and MONAI imports before its first step (issue 19)."""
    code = (
        "import sys, seglab.stages.lgg_compare; "
        "print(sorted(m for m in ('torch', 'lightning', 'monai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
