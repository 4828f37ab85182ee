"""nnU-Net's protocol on the 80 non-test patients: five folds, inference chosen out of fold,
the five models averaged on test.

Every round so far trained on the 70 training patients and chose its epoch, flips and clean-up
on 10 validation patients (178 slices), where one patient's basal slices move the mean by 0.01.
nnU-Net instead trains five models, each on four fifths of the patients outside the test split
and validated on the fifth it never saw; it chooses its post-processing on the pooled
out-of-fold predictions (every one of the 80 patients, about 1530 slices) and predicts the test
split with the mean softmax of the five. This runs that protocol with the stage's own pieces:
the folds of ``patient_folds`` (stratified by group, seeded), a network and recipe of the
params (``new_module``, ``segmenters.train_for(arch)``, the stage's data module and ``fit``:
checkpoints, resume, progress lines), and the flips and clean-up chosen as the stage chooses
them, on the held-out patients alone. It reports, for the test split: each fold's model with
the inference chosen on its own fold (what one training of 64 patients gives), and the
ensemble with the inference chosen on all 80 patients out of fold. The test split chooses
nothing. Checkpoints go to ``<out>.fold<k>.ckpt/``: the same command again resumes an
interrupted fold (and only scores finished ones again). With ``--save-probs`` it also writes
the ensemble's softmax (``presence.py`` reads it).

Run it where real ACDC is prepared (``seglab prepare acdc`` with ``profile: cpu``)::

    uv run --frozen python benchmarks/five_folds.py --params params.yaml --arch resunet \\
        --out reports/real-acdc/recipe/round15-resunet-5fold
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from common import prepared_acdc_parser  # siblings: benchmarks/ on sys.path
from volume_model import Probabilities, chosen_inference, two_d_probabilities

from seglab.config import CardiacParams, load_params
from seglab.data.labels import NUM_LABELS
from seglab.data.splits import patient_folds
from seglab.data.store import SliceSet, concat, load_splits
from seglab.inference.segment import load_segmenter
from seglab.training.fit import fit
from seglab.training.history import write_curves
from seglab.training.segmenters import MONITOR, new_module, segmenter_data


def fold_parts(pool: SliceSet, fold: np.ndarray, k: int) -> dict[str, SliceSet]:
    """Fold ``k``'s training slices (every other fold) and its held-out ones."""
    return {"train": pool.take(fold != k), "val": pool.take(fold == k)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = prepared_acdc_parser(__doc__)
    parser.add_argument("--arch", default="resunet", help="network and recipe of the params")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="of the fold assignment")
    parser.add_argument(
        "--save-probs",
        action="store_true",
        help="also write the ensemble's softmax (out of fold on the pool, mean on test), float16,"
        " with and without flips, to <out>.probs.npz (about 0.5 GB on ACDC; for presence.py)",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, CardiacParams)
    seg = params.segmenters
    recipe = seg.train_for(args.arch)
    trainer = recipe.trainer
    splits = load_splits(args.prepared)
    pool, test = concat([splits["train"], splits["val"]]), splits["test"]
    fold = pool.meta["patient"].map(patient_folds(pool.meta, args.folds, args.seed)).to_numpy()
    out_of_fold = {
        f: torch.zeros(len(pool), NUM_LABELS, *pool.label.shape[1:]) for f in (False, True)
    }
    test_sum = {f: torch.zeros(len(test), NUM_LABELS, *test.label.shape[1:]) for f in (False, True)}
    folds: list[dict[str, Any]] = []
    for k in range(args.folds):
        held = fold == k
        part = fold_parts(pool, fold, k)
        module = new_module(args.arch, seg)
        data = segmenter_data(part, recipe)
        prefix = args.out.with_name(f"{args.out.name}.fold{k}")
        print(f"fold {k}: {part['train'].meta['patient'].nunique()} patients", file=sys.stderr)
        result = fit(
            module, data, trainer, prefix.with_name(prefix.name + ".ckpt"), monitor=MONITOR
        )
        write_curves(result.history, prefix.with_name(prefix.name + ".curves.csv"))
        best = load_segmenter(result.kept_path).eval()
        probs = two_d_probabilities(best, {"val": part["val"], "test": test})
        for flips in (False, True):
            out_of_fold[flips][torch.from_numpy(held)] = probs[flips]["val"]
            test_sum[flips] += probs[flips]["test"]
        folds.append(
            {
                "fold": k,
                "val_patients": int(part["val"].meta["patient"].nunique()),
                "epochs": result.epochs,
                "best_val_dice_mean": result.best_score,
                "train_seconds": round(result.history[-1]["seconds"], 1),  # across resumes
                **chosen_inference(probs, {"val": part["val"], "test": test}),
            }
        )
    mean: Probabilities = {
        f: {"val": out_of_fold[f], "test": test_sum[f] / args.folds} for f in (False, True)
    }
    if args.save_probs:
        np.savez(
            args.out.with_name(args.out.name + ".probs.npz"),
            **{
                f"{n}_flips{int(f)}": p.half().numpy()
                for f, by in mean.items()
                for n, p in by.items()
            },
        )
    single = [f["test"]["dice_mean"] for f in folds]
    report: dict[str, Any] = {
        "arch": args.arch,
        "folds": args.folds,
        "fold_seed": args.seed,
        "patients": int(pool.meta["patient"].nunique()),
        "train_seconds": round(sum(f["train_seconds"] for f in folds), 1),
        "single_model_test_dice_mean": {
            "mean": float(np.mean(single)),
            "min": float(min(single)),
            "max": float(max(single)),
        },
        "ensemble": chosen_inference(mean, {"val": pool, "test": test}),
        "test_patients": int(test.meta["patient"].nunique()),
        "test_slices": len(test),
        "fold_models": folds,
    }
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "fold_models"}, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
