"""The pruning callback on a real Lightning loop: prunes mid-trial, never at the last epoch."""

from __future__ import annotations

import lightning as L
import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from seglab.search.pruning import LastEpochCompletes

optuna.logging.set_verbosity(optuna.logging.WARNING)


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val_dice_mean", 0.5 + 0.1 * self.current_epoch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(trial: optuna.Trial, epochs: int) -> None:
    loader = DataLoader(TensorDataset(torch.rand(4, 2)), batch_size=2)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[LastEpochCompletes(trial, monitor="val_dice_mean")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Tiny(), loader, loader)


def test_prunes_before_the_last_epoch_and_never_at_it() -> None:
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    early = study.ask()
    with pytest.raises(optuna.TrialPruned, match="epoch 0"):
        _fit(early, epochs=3)
    last = study.ask()
    _fit(last, epochs=1)  # its only epoch is its last: reported, not pruned
    study.tell(last, 0.5)
    frozen = study.trials[last.number]
    assert frozen.state == optuna.trial.TrialState.COMPLETE
    assert frozen.intermediate_values == {0: pytest.approx(0.5)}
