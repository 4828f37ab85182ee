"""The one-line progress report of a training."""

from __future__ import annotations

from seglab.training.history import progress_line

ROWS = [
    {"epoch": 0, "seconds": 30.0, "train_loss": 0.5, "val_dice": 0.7},
    {"epoch": 1, "seconds": 60.0, "train_loss": 0.4, "val_dice": 0.6},
]


def test_time_left_is_the_epochs_at_this_pace() -> None:
    line = progress_line(ROWS, "val_dice", "max", 4)
    assert (
        line == "epoch 2/4  train_loss 0.4  val_dice 0.6 (best 0.7 @ 1)  30 s/epoch, 1.0 min left"
    )


def test_a_time_budget_that_ends_sooner_gives_the_time_left() -> None:
    assert progress_line(ROWS, "val_dice", "max", 100, budget_left=90.0).endswith("1.5 min left")
    # The epochs end before the budget: their time is what is left.
    assert progress_line(ROWS, "val_dice", "max", 4, budget_left=3600.0).endswith("1.0 min left")
