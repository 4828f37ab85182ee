"""Pruning a trial from its per-epoch validation Dice, without wasting a finished budget.

Optuna's Lightning callback can prune at any epoch, the last one included; a trial pruned there
has already spent its whole budget, and loses its final figures and its chance to be the best
on a median it merely missed. :class:`LastEpochCompletes` reports the last epoch's value (so the
pruner still learns from it) and lets the trial complete. Imported lazily: it imports Lightning.
"""

from __future__ import annotations

import lightning as L
from optuna_integration import PyTorchLightningPruningCallback


class LastEpochCompletes(PyTorchLightningPruningCallback):
    """Optuna's pruning callback, except that a trial's last epoch never prunes it."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.max_epochs is not None and pl_module.current_epoch + 1 >= trainer.max_epochs
        if trainer.sanity_checking or not last:
            super().on_validation_end(trainer, pl_module)
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None:
            self._trial.report(score.item(), step=pl_module.current_epoch)
