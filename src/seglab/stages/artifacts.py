"""What one stage writes and a later one reads: where each artifact lives, and reading it back
with a check that it still matches the data it was made from. Stages import these instead of
each other."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglab.config import CardiacParams
from seglab.data.store import SliceSet, load_splits, read_npz
from seglab.errors import DataError

#: ``method`` of a cross-prediction file when ACDCSeg's train split is predicted in-sample.
INSAMPLE = "insample"
#: MLflow experiment of the correctors (the correction report logs there too).
CORRECTORS_EXPERIMENT = "acdc-correctors"
#: The keys that line a corrector's test rows up with ACDCSeg's.
ROW_KEYS = ("patient", "phase", "slice_index", "segmenter")
#: MLflow experiment of the LGG architectures: each one's training run and the comparison.
LGG_EXPERIMENT = "lgg-architectures"
#: The prepared LGG splits, as the runs list them (MLflow dataset name).
LGG_DATASET = "lgg_prepared"


def load_prepared(params: CardiacParams, root: Path) -> dict[str, SliceSet]:
    """The prepared ACDC splits (train, val, test), each refused when empty."""
    return load_splits(Path(root) / params.acdc.prepared, split_setting="acdc.prepare.split")


def load_crossfit(path: Path, train: SliceSet) -> tuple[np.ndarray, np.ndarray] | None:
    """Out-of-fold ``(pred, fold)`` for the prepared train split, or None for in-sample."""
    data = read_npz(path, "cross-prediction file")
    if str(data.get("method")) == INSAMPLE:
        return None
    meta = train.meta
    same = (
        "pred" in data
        and data["pred"].shape == train.label.shape
        and np.array_equal(data["patient"], meta["patient"].to_numpy().astype(str))
        and np.array_equal(data["frame"], meta["frame"].to_numpy())
        and np.array_equal(data["slice_index"], meta["slice_index"].to_numpy())
    )
    if not same:
        raise DataError(path, "does not match the prepared train split (stale: run `dvc repro`)")
    return data["pred"], data["fold"]


def load_predictions(path: Path, test: SliceSet) -> dict[str, np.ndarray]:
    """A variant's ``.npz`` of corrected test rows, checked to line up with ACDCSeg's test rows
    (the report would otherwise compare masks of different slices)."""
    arrays = read_npz(path, "corrections", "run `dvc repro train_corrector`")
    for key in ROW_KEYS:
        stored = arrays.pop(f"row.{key}", None)
        if (
            stored is None
            or len(stored) != len(test)
            or not np.array_equal(stored.astype(str), test.meta[key].to_numpy().astype(str))
        ):
            raise DataError(path, f"rows do not match ACDCSeg's test split ({key} differs)")
    return arrays
