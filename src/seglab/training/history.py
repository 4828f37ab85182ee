"""Per-epoch training history: one row per validation epoch, for curves (DVC plots, reports).

Every trainer records it the same way, so a curve of validation Dice (or loss) against wall
time is comparable between architectures and runs (the time-to-Dice benchmarks read it too).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback, Timer

from seglab.io import atomic_file


class EpochHistory(Callback):
    """One row per validation epoch: ``epoch`` (0-based), ``step``, ``seconds`` (wall time since
    the training started, across resumes), the mean training loss and every ``val_*`` figure.

    The rows travel in the checkpoints, so a resumed training keeps its history and clock. With
    ``monitor``, each row is also printed as one progress line (stderr) with the monitored figure,
    its best so far and the time left at the pace of this run's epochs, e.g.
    ``epoch 12/30  train_loss 0.2031  val_dice_mean 0.8121 (best 0.8143 @ 10)  31 s/epoch,
    9.3 min left``: a training of hours is never silent, and a log file reads line by line.
    """

    def __init__(self, monitor: str | None = None, mode: str = "max") -> None:
        self.monitor = monitor
        self.mode = mode
        self.rows: list[dict[str, float]] = []
        self._start = 0.0
        self._offset = 0.0
        self._loss = 0.0
        self._batches = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._offset = self.rows[-1]["seconds"] if self.rows else 0.0
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss, self._batches = 0.0, 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        self._loss += float(loss.detach())
        self._batches += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        figures = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self.rows.append(
            {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "seconds": self._offset + time.perf_counter() - self._start,
                "train_loss": self._loss / self._batches if self._batches else math.nan,
                **figures,
            }
        )
        if self.monitor is not None and trainer.is_global_zero:
            timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
            budget = timer.time_remaining() if timer is not None else None
            line = progress_line(self.rows, self.monitor, self.mode, trainer.max_epochs, budget)
            print(line, file=sys.stderr, flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]


def progress_line(
    rows: Sequence[Mapping[str, float]],
    monitor: str,
    mode: str,
    max_epochs: int | None,
    budget_left: float | None = None,
) -> str:
    """The last row as one line: epoch k/N, losses, the monitored figure and its best so far,
    seconds per epoch and the time left (the epochs' or, when sooner, the time budget's, in
    seconds ``budget_left``).

    >>> rows = [{"epoch": 0, "seconds": 30.0, "train_loss": 0.5, "val_dice": 0.7},
    ...         {"epoch": 1, "seconds": 60.0, "train_loss": 0.4, "val_dice": 0.6}]
    >>> progress_line(rows, "val_dice", "max", 4)
    'epoch 2/4  train_loss 0.4  val_dice 0.6 (best 0.7 @ 1)  30 s/epoch, 1.0 min left'
    >>> progress_line(rows, "val_dice", "max", 100, budget_left=90.0)[-24:]
    '30 s/epoch, 1.5 min left'
    >>> rows = [{"epoch": 0, "seconds": 9.0, "val_loss": 80.0, "val_dice_mean": 0.91}]
    >>> progress_line(rows, "val_loss", "min", 1)
    'epoch 1/1  val_loss 80 (best 80 @ 1)  val_dice_mean 0.91  9 s/epoch, 0.0 min left'
    """
    row = rows[-1]
    done = int(row["epoch"]) + 1
    values = [r.get(monitor, math.nan) for r in rows]
    pick = max if mode == "max" else min
    best = pick(range(len(values)), key=lambda i: (not math.isnan(values[i]), values[i]))
    parts = [f"epoch {done}/{max_epochs or '?'}"]
    parts += [f"{key} {row[key]:.4g}" for key in ("train_loss", "val_loss") if key in row]
    if monitor != "val_loss":
        parts.append(f"{monitor} {row.get(monitor, math.nan):.4g}")
    parts[-1] += f" (best {values[best]:.4g} @ {int(rows[best]['epoch']) + 1})"
    if monitor != "val_dice_mean" and "val_dice_mean" in row:  # the NVAE's loss, and its Dice
        parts.append(f"val_dice_mean {row['val_dice_mean']:.4g}")
    pace = (row["seconds"] - rows[0]["seconds"]) / (len(rows) - 1) if len(rows) > 1 else (
        row["seconds"] / done)  # fmt: skip
    seconds_left = pace * max(0, (max_epochs or done) - done)
    if budget_left is not None:
        seconds_left = min(seconds_left, max(0.0, budget_left))
    left = f", {seconds_left / 60:.1f} min left"
    return "  ".join(parts) + f"  {pace:.0f} s/epoch" + left


def write_curves(history: Sequence[Mapping[str, float]], target: Path) -> None:
    """The history as a CSV (one row per epoch), written atomically."""
    with atomic_file(target) as tmp:
        pd.DataFrame(list(history)).to_csv(tmp, index=False, float_format="%.6g")
