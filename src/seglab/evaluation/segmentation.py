"""Test figures of a segmenter's predictions on a prepared split: per-slice Dice and HD95,
anatomical validity, empty masks counted apart, and the Dice pooled per 3D volume. One function
for the training stage, the benchmarks and the GPU run, so each reports the same keys. Also the
two choices made on the validation split and ground truth only: the clean-up of predictions and
the anatomical check of the prepared masks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from seglab.config import SegmentersParams, TrainerParams
from seglab.data.store import SliceSet, volume_rows
from seglab.inference.postprocess import Cleanup, choose
from seglab.inference.segment import predict_labels
from seglab.metrics.emptied import EMPTIED_KEYS, check_against
from seglab.metrics.overlap import OVERLAP_KEYS, overlap, summarize_overlap, volume_dice
from seglab.training.segmentation_module import SegmentationModule

#: Test figures logged to every run, under the same keys for every architecture.
TEST_KEYS = (*OVERLAP_KEYS, "anatomical_validity", *EMPTIED_KEYS)
#: The same Dice pooled per 3D volume (the ACDC challenge's measure), beside the per-slice one.
VOLUME_KEYS = ("dice3d_mean", "dice3d_lv", "dice3d_myo", "dice3d_rv")


def evaluate(pred: np.ndarray, slices: SliceSet) -> dict[str, Any]:
    """Dice, HD95 (mm, at each slice's spacing) and anatomical validity of predictions.

    A prediction that is all background where the ground truth shows a heart is never valid and
    is counted apart (``emptied``, and ``emptied_fraction`` of the slices with a heart).
    The :data:`TEST_KEYS` figures come first, then the volume Dice (:data:`VOLUME_KEYS`); the
    rest of the overlap summary (absent-structure case counts) follows for the metrics file.
    """
    summary = summarize_overlap(overlap(pred, slices.label, slices.spacing))
    checked = check_against(pred, slices.label, slices.spacing).summary()
    figures = {**summary, **{k: checked[k] for k in ("anatomical_validity", *EMPTIED_KEYS)}}
    volumes = volume_dice(pred, slices.label, volume_ids(slices))
    return (
        {key: figures[key] for key in TEST_KEYS}
        | volumes
        | {key: value for key, value in figures.items() if key not in TEST_KEYS}
    )


def dice_mean(pred: np.ndarray, slices: SliceSet) -> float:
    """The per-slice mean Dice alone (what a clean-up is chosen on; no HD95, for speed)."""
    result = overlap(pred, slices.label, slices.spacing, hd95=False)
    return float(summarize_overlap(result)["dice_mean"])


def volume_ids(slices: SliceSet) -> np.ndarray:
    """One id per 3D volume (patient and frame) for :func:`~seglab.metrics.overlap.volume_dice`."""
    meta = slices.meta
    return (meta["patient"].astype(str) + "/" + meta["frame"].astype(str)).to_numpy()


def choose_inference(
    module: SegmentationModule, val: SliceSet, trainer: TrainerParams, seg: SegmentersParams
) -> tuple[bool, Cleanup, dict[str, float]]:
    """How ``module`` predicts: whether it averages over flips (``segmenters.flips``) and its
    clean-up (``segmenters.postprocess``), each the params' or, with ``auto``, the one with the
    best validation Dice (never the test split); and every option's validation Dice, as
    :func:`pick_inference` keys them.

    Leaves ``module.hparams["flips"]`` as chosen.
    """
    preds: dict[bool, np.ndarray] = {}
    for flips in (False, True) if seg.flips == "auto" else (seg.flips,):
        module.hparams["flips"] = flips
        preds[flips] = predict_labels(module, val, trainer, raw=True)
    fixed = Cleanup(seg.postprocess, seg.postprocess_min_pixels, seg.postprocess_across_slices)
    flips, cleanup, scores = pick_inference(
        preds, val, None if seg.postprocess == "auto" else fixed
    )
    module.hparams["flips"] = flips
    return flips, cleanup, scores


def pick_inference(
    preds: Mapping[bool, np.ndarray], val: SliceSet, fixed: Cleanup | None = None
) -> tuple[bool, Cleanup, dict[str, float]]:
    """The flips setting and clean-up with the best Dice on ``val``, from the raw label maps of
    ``val`` predicted with and without flips (``preds``, keyed by the flips setting); the
    clean-up is ``fixed`` when given, else the best of :func:`choose`'s. Also every option's
    Dice, keyed by :attr:`Cleanup.name` (``flips_`` first for the flip-averaged predictions).
    Flips must earn their place: on a tie the plain prediction stays.
    """
    volumes = volume_rows(val.meta)
    best: tuple[float, bool, Cleanup] | None = None
    scores: dict[str, float] = {}
    for flips in sorted(preds):
        if fixed is None:
            cleanup, tried = choose(preds[flips], lambda p: dice_mean(p, val), volumes)
        else:
            cleanup, tried = fixed, {fixed.name: dice_mean(fixed.apply(preds[flips], volumes), val)}
        scores |= {("flips_" if flips else "") + key: value for key, value in tried.items()}
        if best is None or tried[cleanup.name] > best[0]:
            best = (tried[cleanup.name], flips, cleanup)
    assert best is not None
    return best[1], best[2], scores
