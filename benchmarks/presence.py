"""Structures the argmax leaves out: does a lower bar for a missing structure find them?

Where the per-slice Dice is lost is whole slices that count 0, most of them an RV the annotators
drew on a basal slice and the segmenter did not (round 15's five-fold ensemble: 19 of the 20
test patients' RV slices missed, 9 drawn where there was none). On such a slice the softmax
often still ranks the missing structure's pixels well above the rest, short of winning the
argmax. The rule tried here, applied before the clean-up: on a slice where the argmax has no
pixel of a structure, the largest connected region of pixels the argmax left as background
whose softmax for that structure is at least ``t`` becomes that structure, if it holds at
least ``--min-pixels`` pixels. Two choices, both on the out-of-fold Dice over the 80 non-test
patients: first the flips and clean-up of the plain argmax, as the stage chooses them; then,
that clean-up kept (the clean-up's 24 variants per ``t`` would take an hour of 2 cores), the
flips and a ``t`` of ``--thresholds``, or none (no rule on a tie). The test split only
reports, for the choice and, for the record, for every ``t``.

It reads the softmax ``five_folds.py --save-probs`` wrote (the pool's out of fold, the five
models' mean on test) and the prepared splits it ran on::

    uv run --frozen python benchmarks/five_folds.py --params params.yaml --arch resunet \\
        --out reports/real-acdc/recipe/round16-resunet-5fold --save-probs
    uv run --frozen python benchmarks/presence.py \\
        --probs reports/real-acdc/recipe/round16-resunet-5fold.probs.npz \\
        --out reports/real-acdc/recipe/round16-presence
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from volume_model import Probabilities, chosen_inference  # siblings: benchmarks/ on sys.path

from seglab.data.labels import STRUCTURE_LABELS
from seglab.data.store import concat, load_splits
from seglab.inference.postprocess import Cleanup

#: 8-connected regions, as the clean-up's.
CONNECTED = np.ones((3, 3), dtype=bool)


def recall(probs: Tensor, threshold: float | None, min_pixels: int) -> np.ndarray:
    """uint8 ``[N, H, W]``: the argmax of ``probs`` ``[N, C, H, W]``, and on each slice where
    a structure has no pixel, the largest region of background pixels with that structure's
    softmax >= ``threshold`` (``None``: the argmax alone) if it holds ``min_pixels`` or more.

    >>> p = torch.zeros(1, 4, 4, 4); p[:, 0] = 0.7; p[0, 1, :2, :2] = 0.3
    >>> int((recall(p, 0.25, 4) == 1).sum()), int((recall(p, None, 4) == 1).sum())
    (4, 0)
    """
    pred = probs.argmax(1).numpy().astype(np.uint8)
    if threshold is None:
        return pred
    for label in STRUCTURE_LABELS:
        score = probs[:, label].numpy()
        missing = ~(pred == label).any(axis=(1, 2)) & (score >= threshold).any(axis=(1, 2))
        for i in np.flatnonzero(missing):
            regions, count = ndimage.label((score[i] >= threshold) & (pred[i] == 0), CONNECTED)
            if count:
                sizes = np.bincount(regions.ravel())
                sizes[0] = 0
                if sizes.max() >= min_pixels:
                    pred[i][regions == sizes.argmax()] = label
    return pred


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probs", type=Path, required=True, help="five_folds.py --save-probs")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/acdc"))
    parser.add_argument("--out", type=Path, required=True, help="prefix of the outputs")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--min-pixels", type=int, default=10)
    args = parser.parse_args(argv)
    splits = load_splits(args.prepared)
    sets = {"val": concat([splits["train"], splits["val"]]), "test": splits["test"]}
    with np.load(args.probs) as stored:
        probs: Probabilities = {
            f: {n: torch.from_numpy(stored[f"{n}_flips{int(f)}"]).float() for n in sets}
            for f in (False, True)
        }
    for name, slices in sets.items():
        if (stored_slices := probs[False][name].shape[0]) != len(slices):
            raise SystemExit(
                f"{args.probs}: {stored_slices} {name} slices against {len(slices)} prepared:"
                " not the splits five_folds.py ran on"
            )
    base = chosen_inference(probs, sets)  # the flips and clean-up of the plain argmax
    cleanup = Cleanup.from_hparams(base["cleanup"])
    options = {"none": base}
    for threshold in args.thresholds:
        decode = partial(recall, threshold=threshold, min_pixels=args.min_pixels)
        options[str(threshold)] = chosen_inference(probs, sets, decode, cleanup)
    for name, row in options.items():
        print(f"t={name}: out of fold {row['chosen_val_dice_mean']:.4f}", file=sys.stderr)
    chosen = max(options, key=lambda k: options[k]["chosen_val_dice_mean"])  # first wins ties
    report = {
        "probs": str(args.probs),
        "min_pixels": args.min_pixels,
        "pool_slices": len(sets["val"]),
        "test_slices": len(sets["test"]),
        "chosen_threshold": chosen,
        "chosen": options[chosen],
        "options": options,
    }
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        json.dumps(
            {k: {"val": v["chosen_val_dice_mean"], "test": v["test"]} for k, v in options.items()},
            indent=1,
        )
    )
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
