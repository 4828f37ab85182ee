"""The ACDCSeg and 3-gram stages: every segmenter's predicted masks, as datasets for correction.

``build_acdcseg`` (DVC ``acdcseg``) writes ``<acdcseg.out>/{train,val,test}.npz`` in the layout of
:mod:`seglab.data.acdcseg` (one row per slice and segmenter) and ``meta.json``. The splits are the
prepared patient-level splits, so no patient crosses splits:

- val and test: predictions of the final models (trained on the train patients only);
- train: with ``acdcseg.folds`` = K >= 2, the out-of-fold predictions that each
  ``train_segmenter`` stage made (each slice predicted by a model that never saw its patient);
  with K = 1, the final models' in-sample predictions (the study's choice: optimistic, flagged
  in ``meta.json``).

``build_trigram`` (DVC ``acdc3gram``) turns each ACDCSeg split into its 3-gram form in
``<acdcseg.trigram>``.
"""

from __future__ import annotations

from pathlib import Path

from seglab.config import CardiacParams
from seglab.data.acdcseg import acdcseg_rows, trigram_rows
from seglab.data.splits import SPLITS
from seglab.data.store import SliceSet, concat, load_split, save_split
from seglab.io import atomic_dir, write_json


def build_acdcseg(params: CardiacParams, *, root: Path = Path(".")) -> str:
    """Predict every prepared slice with every segmenter; returns a one-line summary."""
    # Imported here: networks, Lightning and MLflow cost tens of seconds of imports on a small
    # CPU, and the 3-gram stage (the other function here) needs none of them.
    from seglab.inference.segment import load_segmenter, predict_labels
    from seglab.stages.artifacts import (
        INSAMPLE,
        load_crossfit,
        load_prepared,
    )

    root = Path(root)
    seg = params.segmenters
    splits = load_prepared(params, root)
    rows: dict[str, list[SliceSet]] = {split: [] for split in SPLITS}
    train_method: dict[str, str] = {}
    for arch in seg.archs:
        module = load_segmenter(seg.checkpoint_path(arch, root))
        crossfit = load_crossfit(seg.crossfit_path(arch, root), splits["train"])
        train_method[arch] = INSAMPLE if crossfit is None else f"crossfit-{params.acdcseg.folds}"
        for split in SPLITS:
            if split == "train" and crossfit is not None:
                pred, fold = crossfit
                rows[split].append(acdcseg_rows(splits[split], pred, arch, fold))
                continue
            pred = predict_labels(module, splits[split], seg.train_for(arch).trainer)
            rows[split].append(acdcseg_rows(splits[split], pred, arch))
    out = root / params.acdcseg.out
    counts: dict[str, int] = {}
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            merged = concat(rows[split])
            save_split(tmp / f"{split}.npz", merged)
            counts[split] = len(merged)
        write_json(
            tmp / "meta.json",
            {
                "segmenters": list(seg.archs),
                "train_predictions": train_method,
                "train_predictions_note": (
                    "crossfit-K: each training slice predicted by the fold model that never saw "
                    "its patient; insample: by the final model trained on it (optimistic)"
                ),
                "val_test_predictions": "final models (trained on the train patients only)",
                "rows": counts,
                "layout": "one row per (slice, segmenter); extra.pred = predicted labels",
                "prepared": str(params.acdc.prepared),
            },
        )
    methods = ", ".join(sorted(set(train_method.values())))
    parts = ", ".join(f"{k} {v} rows" for k, v in counts.items())
    return f"wrote ACDCSeg to {params.acdcseg.out}: {parts}; train predictions: {methods}"


def build_trigram(params: CardiacParams, *, root: Path = Path(".")) -> str:
    """ACDCSeg -> its 3-gram form (prev, current, next predicted slice); returns a summary."""
    root = Path(root)
    source = root / params.acdcseg.out
    out = root / params.acdcseg.trigram
    counts: dict[str, dict[str, int]] = {}
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            path = source / f"{split}.npz"
            grams = trigram_rows(load_split(path), path)
            save_split(tmp / f"{split}.npz", grams)
            counts[split] = {
                "rows": len(grams),
                "eos_before": int((grams.meta["slice_index"] == 0).sum()),
                "eos_after": int(
                    (grams.meta["slice_index"] == grams.meta["slice_count"] - 1).sum()
                ),
            }
        write_json(
            tmp / "meta.json",
            {
                "source": str(params.acdcseg.out),
                "layout": (
                    "extra.context uint8 [N, 3, H, W]: predicted labels of the previous, current "
                    "and next slice of the same patient, frame and segmenter; all-background "
                    "(EOS) beyond the first and last slice; one-hot to 12 channels on load"
                ),
                "splits": counts,
            },
        )
    parts = ", ".join(f"{k} {v['rows']} rows" for k, v in counts.items())
    return f"wrote the 3-gram dataset to {params.acdcseg.trigram}: {parts}"
