"""Per-epoch training history: one row per validation epoch, for curves (DVC plots, reports).

Every trainer records it the same way, so a curve of validation Dice (or loss) against wall
time is comparable between architectures and runs (the time-to-Dice benchmarks read it too).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback

from seglab.io import atomic_file


class EpochHistory(Callback):
    """One row per validation epoch: ``epoch`` (0-based), ``step``, ``seconds`` (wall time since
    the training started, across resumes), the mean training loss and every ``val_*`` figure.

    The rows travel in the checkpoints, so a resumed training keeps its history and clock.
    """

    def __init__(self) -> None:
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

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]


def write_curves(history: Sequence[Mapping[str, float]], target: Path) -> None:
    """The history as a CSV (one row per epoch), written atomically."""
    with atomic_file(target) as tmp:
        pd.DataFrame(list(history)).to_csv(tmp, index=False, float_format="%.6g")
