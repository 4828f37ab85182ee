"""Silence what a seglab user cannot act on: libraries' tips, deprecations inside other libraries
and notes about settings seglab chose on purpose. Everything else (errors, our progress lines,
warnings about the user's data or settings) still shows.

Installed once by the ``seglab`` command (:func:`quiet_libraries`); library code and tests are
left alone, so a test still sees every warning.
"""

from __future__ import annotations

import logging
import re
import warnings

#: Warning messages (regular expressions, matched at the start) raised inside libraries.
WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch, from Lightning's own code
    r"No complete tensor found in the group",  # torch.export, when MLflow saves a model
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a",
    r"The '\w+_dataloader' does not have many workers",  # tensors in memory need none
    # A training's work folder holds its MLflow run id (and, resuming, its checkpoints).
    r"Checkpoint directory .* exists and is not empty",
)

#: Log records (logger name -> message patterns) that say nothing the user can act on.
RECORDS = {
    "lightning.pytorch.utilities.rank_zero": (
        r".*litlogger",  # "Tip: try installing litlogger" on every Trainer
        r"TPU available",
        r"`Trainer\(limit_(train|val)_batches=1\.0\)` was configured",
    ),
    "mlflow.utils.environment": (r"Failed to resolve installed pip version",),
}


class _Drop(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_libraries() -> None:
    """Install the filters (idempotent: a filter already there is not added twice)."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name, patterns in RECORDS.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in log.filters):
            log.addFilter(_Drop(patterns))
