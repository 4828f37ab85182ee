"""One set of predictions, three Dice conventions: how much of the distance between our
segmenters' figures and the study's is the measure rather than the model.

- ``strict`` (the project's, every report): per slice and structure, a structure absent from both
  masks is left out; a false positive (predicted where the ground truth has none) or a miss
  counts 0; the mean over slices, then over LV, MYO, RV.
- ``gt_present`` (MONAI's ``DiceMetric`` default, ``ignore_empty=True``): only the slices whose
  ground truth has the structure; a false positive on any other slice is not counted.
- ``volume`` (the ACDC challenge's): each 3D volume's pixels pooled, then the mean over volumes.

The predictions are the checkpoints' own (with the clean-up stored in them), on the prepared
splits of a real-ACDC project folder; nothing is chosen here, so the test split may be scored.

    uv run --frozen python benchmarks/dice_conventions.py /path/to/project --splits val test
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglab.config import CardiacParams, TrainerParams, load_params
from seglab.data.labels import STRUCTURES
from seglab.data.store import load_split
from seglab.evaluation.segmentation import volume_ids
from seglab.inference.segment import load_segmenter, predict_labels
from seglab.metrics.overlap import Case, overlap, volume_dice


def conventions(pred: np.ndarray, slices) -> dict[str, float]:  # noqa: ANN001
    """The three mean Dice figures (and the false-positive slices the strict one counts)."""
    result = overlap(pred, slices.label, slices.spacing)
    strict = np.nanmean(result.dice, axis=0)
    present = np.where(result.case == Case.ABSENT_IN_GT, np.nan, result.dice)
    gt_present = np.nanmean(present, axis=0)
    volumes = volume_dice(pred, slices.label, volume_ids(slices))
    return {
        "strict": float(strict.mean()),
        "gt_present": float(gt_present.mean()),
        "volume": volumes["dice3d_mean"],
        **{f"strict_{s}": float(v) for s, v in zip(STRUCTURES, strict, strict=True)},
        **{f"gt_present_{s}": float(v) for s, v in zip(STRUCTURES, gt_present, strict=True)},
        "false_positive_slices": int((result.case == Case.ABSENT_IN_GT).any(axis=1).sum()),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="a project folder trained on real ACDC")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    params = load_params(args.project / "params.yaml", CardiacParams)
    trainer = TrainerParams(accelerator="cpu", devices=1)
    out: dict[str, dict[str, dict[str, float]]] = {}
    print(
        f"{'arch':<10} {'split':<5} {'strict':>7} {'gt_present':>10} {'volume':>7} {'FP slices':>9}"
    )
    for arch in params.segmenters.archs:
        module = load_segmenter(params.segmenters.checkpoint_path(arch, args.project))
        for split in args.splits:
            slices = load_split(args.project / params.acdc.prepared / f"{split}.npz")
            row = conventions(predict_labels(module, slices, trainer), slices)
            out.setdefault(arch, {})[split] = row
            print(
                f"{arch:<10} {split:<5} {row['strict']:>7.4f} {row['gt_present']:>10.4f} "
                f"{row['volume']:>7.4f} {row['false_positive_slices']:>9}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    from seglab.quiet import quiet_libraries

    quiet_libraries()
    main()
