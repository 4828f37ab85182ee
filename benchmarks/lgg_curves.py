"""Two or more real-LGG runs side by side: each network's validation IoU against training wall
time, one panel per network, from the ``<name>.curves.csv`` files the LGG train stage writes.

Each run is ``LABEL=FOLDER`` (a run's ``metrics/lgg``, or a copy of its curves). The table has,
per network and run, the best validation IoU, its epoch and the mean of the last five epochs
(where a schedule that decays to zero ends), then the mean over the networks. Validation split
only: the test split never picks a recipe.

    uv run --frozen python benchmarks/lgg_curves.py "constant lr=old/metrics/lgg" \\
        "cosine=metrics/lgg" --out reports/real-lgg/recipe/curves.png --json curves.json
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import markdown_table
from matplotlib.figure import Figure

from seglab.io import write_json

METRIC = "val_iou"
SUFFIX = ".curves.csv"


def read_runs(specs: Sequence[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """``LABEL=FOLDER`` -> {label: {network: curves}}; every run must have the same networks."""
    runs: dict[str, dict[str, pd.DataFrame]] = {}
    for spec in specs:
        label, sep, folder = spec.rpartition("=")
        if not sep:
            raise SystemExit(f"'{spec}' is not LABEL=FOLDER")
        files = sorted(Path(folder).glob(f"*{SUFFIX}"))
        if not files:
            raise SystemExit(f"{folder}: no *{SUFFIX} files (the LGG train stage writes them)")
        runs[label] = {f.name.removesuffix(SUFFIX): pd.read_csv(f) for f in files}
    names = {label: sorted(curves) for label, curves in runs.items()}
    if len({tuple(n) for n in names.values()}) > 1:
        raise SystemExit(f"the runs have different networks: {names}")
    return runs


def summarize(runs: Mapping[str, Mapping[str, pd.DataFrame]]) -> list[dict[str, Any]]:
    """One row per network and run, then one per run with the means over its networks."""
    rows: list[dict[str, Any]] = []
    for name in sorted(next(iter(runs.values()))):
        for label, curves in runs.items():
            frame = curves[name]
            best = int(frame[METRIC].idxmax())
            rows.append(
                {
                    "network": name,
                    "run": label,
                    "epochs": len(frame),
                    "best_val_iou": float(frame[METRIC].iloc[best]),
                    "best_epoch": best + 1,
                    "last5_val_iou": float(frame[METRIC].iloc[-5:].mean()),
                }
            )
    for label in runs:
        own = [r for r in rows if r["run"] == label]
        rows.append(
            {
                "network": "mean",
                "run": label,
                "best_val_iou": float(np.mean([r["best_val_iou"] for r in own])),
                "last5_val_iou": float(np.mean([r["last5_val_iou"] for r in own])),
            }
        )
    return rows


def figure(runs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Figure:
    """One panel per network: validation IoU against minutes of training, one line per run."""
    names = sorted(next(iter(runs.values())))
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(4 * cols, 3 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True)).ravel()
    for ax, name in zip(axes, names, strict=False):
        for label, curves in runs.items():
            frame = curves[name]
            ax.plot(frame["seconds"] / 60, frame[METRIC], lw=1, label=label)
        ax.set_title(name)
        ax.set_xlabel("training wall time (min)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation IoU")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=len(runs))
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    return fig


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=FOLDER of <network>.curves.csv files")
    parser.add_argument("--out", type=Path, help="write the picture (PNG)")
    parser.add_argument("--json", type=Path, help="write the table as JSON")
    args = parser.parse_args(argv)
    runs = read_runs(args.runs)
    rows = summarize(runs)
    columns = {
        "network": "network",
        "run": "run",
        "epochs": "epochs",
        "best_val_iou": "best val IoU",
        "best_epoch": "best epoch",
        "last5_val_iou": "mean of last 5",
    }
    print(markdown_table(rows, columns))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure(runs).savefig(args.out, dpi=110)
    if args.json:
        write_json(args.json, {"rows": rows})
    return rows


if __name__ == "__main__":
    main()
