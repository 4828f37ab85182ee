"""Validation Dice against wall time, from the per-epoch curves every training writes.

Each segmenter training writes ``<segmenters.metrics>/<arch>.curves.csv`` (one row per epoch:
``seconds`` since the start, ``val_dice_mean`` and the other validation figures; the NVAE's
``curves.csv`` has the same columns), so the recipe comparison is made from the real stage runs,
not from a separate benchmark loop. This script draws the curves on one picture and prints, per
run, the seconds per epoch, the best validation Dice (epoch and time) and the time to reach each
``--targets`` value (``-`` when never reached). Validation split only: the test split never
picks a recipe or an epoch.

    uv run --frozen python benchmarks/time_to_dice.py metrics/segmenters/*.curves.csv \\
        --out benchmarks/time_to_dice.png --targets 0.85 0.88 0.90
    uv run --frozen python benchmarks/time_to_dice.py old=a.csv new=b.csv --json ttd.json

Runs made on different machines compare by epoch, not by wall time: ``--x epoch`` draws the
curves against the epoch (the table keeps each run's own seconds).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from seglab.io import write_json

METRIC = "val_dice_mean"


def read_runs(specs: Sequence[str]) -> dict[str, pd.DataFrame]:
    """``NAME=PATH`` or ``PATH`` (named after the file, ``unet.curves.csv`` -> ``unet``)."""
    runs: dict[str, pd.DataFrame] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        path_ = Path(path)
        frame = pd.read_csv(path_)
        missing = {"seconds", METRIC} - set(frame.columns)
        if missing:
            raise SystemExit(f"{path_}: no column {', '.join(sorted(missing))} (not a curves file)")
        runs[name or path_.name.split(".")[0]] = frame
    return runs


def summarize(frame: pd.DataFrame, targets: Sequence[float]) -> dict[str, Any]:
    """Seconds per epoch, the best epoch and the first time each target Dice was reached."""
    best = int(frame[METRIC].idxmax())
    seconds = frame["seconds"].to_numpy()
    epoch_seconds = np.diff(seconds, prepend=0.0)
    quiet = float(np.median(np.sort(epoch_seconds)[:5]))  # the run's fastest epochs
    row: dict[str, Any] = {
        "epochs": len(frame),
        "seconds_per_epoch": float(seconds[-1] / len(frame)),
        # On a shared machine the wall time includes other jobs' load: the median of the five
        # fastest epochs, times the epochs, estimates the same training on a quiet machine.
        "quiet_seconds_per_epoch": quiet,
        "quiet_total_seconds": quiet * len(frame),
        "total_seconds": float(seconds[-1]),
        "best_val_dice": float(frame[METRIC].iloc[best]),
        "best_epoch": best + 1,
        "best_seconds": float(seconds[best]),
    }
    for target in targets:
        reached = frame.index[frame[METRIC] >= target]
        row[f"seconds_to_{target:g}"] = float(seconds[reached[0]]) if len(reached) else math.nan
    return row


def figure(runs: dict[str, pd.DataFrame], targets: Sequence[float], x: str = "time") -> Figure:
    """Validation Dice against wall time (``x`` "time") or against the epoch ("epoch")."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, frame in runs.items():
        along = frame["seconds"] / 60 if x == "time" else np.arange(1, len(frame) + 1)
        ax.plot(along, frame[METRIC], marker=".", label=name)
    for target in targets:
        ax.axhline(target, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("training wall time (min)" if x == "time" else "epoch")
    ax.set_ylabel("validation Dice (mean of LV, MYO, RV)")
    ax.set_ylim(max(0.0, min(f[METRIC].min() for f in runs.values()) - 0.02), 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def table(rows: dict[str, dict[str, Any]], targets: Sequence[float]) -> str:
    head = ["run", "epochs", "s/epoch", "quiet s/epoch", "best val Dice", "best epoch"]
    head += ["best at (min)"]
    head += [f"to {t:g} (min)" for t in targets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name, str(r["epochs"]), f"{r['seconds_per_epoch']:.1f}"]
        cells += [f"{r['quiet_seconds_per_epoch']:.1f}"]
        cells += [
            f"{r['best_val_dice']:.4f}",
            str(r["best_epoch"]),
            f"{r['best_seconds'] / 60:.1f}",
        ]
        for t in targets:
            value = r[f"seconds_to_{t:g}"]
            cells.append("-" if math.isnan(value) else f"{value / 60:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("curves", nargs="+", help="NAME=PATH or PATH of a curves CSV")
    parser.add_argument("--targets", type=float, nargs="*", default=[0.85, 0.88, 0.90])
    parser.add_argument("--out", type=Path, help="write the picture (PNG)")
    parser.add_argument("--json", type=Path, help="write the table as JSON")
    parser.add_argument(
        "--x", choices=("time", "epoch"), default="time", help="the picture's horizontal axis"
    )
    args = parser.parse_args(argv)
    runs = read_runs(args.curves)
    rows = {name: summarize(frame, args.targets) for name, frame in runs.items()}
    print(table(rows, args.targets))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure(runs, args.targets, args.x).savefig(args.out, dpi=120)
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
