"""What inference choices buy trained segmenters, scored on the validation split only: the
clean-up chosen as the training stage chooses it (per slice, or with the step across slices),
flip test-time augmentation (the softmax averaged over the four flips), a drop of a structure
from slices where it is small against its largest area in the volume, and the mean of the
networks' softmax (an ensemble). Test figures are printed for each network's chosen option
and for the stored clean-up, never used to choose.

Run in a project folder where the segmenters were trained (e.g. on real ACDC):

    uv run --frozen python benchmarks/inference_choices.py \\
        models/segmenters/{unet,resunet,attunet}.ckpt --json choices.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.data.labels import STRUCTURE_LABELS
from seglab.data.store import SliceSet, load_split, volume_rows
from seglab.evaluation.segmentation import dice_mean, evaluate
from seglab.inference.postprocess import Cleanup, choose
from seglab.inference.segment import cleanup_of, load_segmenter, module_input

#: Fractions of a structure's largest area in its volume below which the relative drop removes it.
FRACTIONS = (0.05, 0.1, 0.2)
TEST_FIGURES = ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "hd95_mean", "anatomical_validity")


def probabilities(net: torch.nn.Module, images: torch.Tensor, flips: bool) -> torch.Tensor:
    """Softmax ``[N, 4, H, W]``, averaged over the four flips of each image with ``flips``."""
    axes: list[tuple[int, ...]] = [(), (-1,), (-2,), (-2, -1)] if flips else [()]
    parts = []
    with torch.no_grad():
        for start in range(0, len(images), 32):
            x = images[start : start + 32]
            total = sum(net(x.flip(a)).softmax(1).flip(a) if a else net(x).softmax(1) for a in axes)
            parts.append(total / len(axes))
    return torch.cat(parts)


def drop_relative(pred: np.ndarray, volumes: Sequence[np.ndarray], fraction: float) -> np.ndarray:
    """A structure dropped from the slices where its area is below ``fraction`` of its largest
    area in the volume (a new array)."""
    out = pred.copy()
    for rows in volumes:
        for label in STRUCTURE_LABELS:
            area = (out[rows] == label).sum(axis=(1, 2))
            for row in rows[(area > 0) & (area < fraction * area.max())]:
                out[row][out[row] == label] = 0
    return out


Option = tuple[bool, Cleanup, float | None]  # flips, clean-up, relative drop


def describe(option: Option) -> str:
    flips, cleanup, fraction = option
    text = ("flips, " if flips else "") + cleanup.describe()
    return text + (f", < {fraction:.0%} of the volume's largest" if fraction else "")


def options(
    probs: dict[bool, dict[str, torch.Tensor]], splits: dict[str, SliceSet]
) -> tuple[dict[str, float], str, np.ndarray]:
    """Validation Dice of every option, the best one's name, and its test predictions."""
    val = splits["val"]
    volumes = {name: volume_rows(s.meta) for name, s in splits.items()}
    raw = {
        flips: {name: p.argmax(1).numpy().astype(np.uint8) for name, p in by_split.items()}
        for flips, by_split in probs.items()
    }

    def predict(option: Option, split: str) -> np.ndarray:
        flips, cleanup, fraction = option
        pred = cleanup.apply(raw[flips][split], volumes[split])
        return drop_relative(pred, volumes[split], fraction) if fraction else pred

    candidates: list[Option] = []
    for flips in raw:
        cleanup, _ = choose(raw[flips]["val"], lambda p: dice_mean(p, val), volumes["val"])
        candidates.append((flips, cleanup, None))
        per_slice = Cleanup(cleanup.method, cleanup.min_pixels)
        candidates += [(flips, per_slice, fraction) for fraction in FRACTIONS]
    scores = {describe(option): dice_mean(predict(option, "val"), val) for option in candidates}
    best = max(candidates, key=lambda option: scores[describe(option)])  # the first on ties
    return scores, describe(best), predict(best, "test")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/acdc"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = {name: load_split(args.prepared / f"{name}.npz") for name in ("val", "test")}
    test = splits["test"]
    results: dict[str, Any] = {}
    every: dict[str, dict[bool, dict[str, torch.Tensor]]] = {}
    for path in args.checkpoints:
        module = load_segmenter(path).eval()
        images = {name: module_input(module, s) for name, s in splits.items()}
        every[path.stem] = {
            flips: {name: probabilities(module.network, x, flips) for name, x in images.items()}
            for flips in (False, True)
        }
        stored = cleanup_of(module)
        raw_test = every[path.stem][False]["test"].argmax(1).numpy().astype(np.uint8)
        stored_test = evaluate(stored.apply(raw_test, volume_rows(test.meta)), test)
        results[path.stem] = {"stored": stored.describe()} | {
            f"stored_test_{key}": float(stored_test[key]) for key in TEST_FIGURES
        }
    if len(every) > 1:
        every["ensemble"] = {
            flips: {n: sum(p[flips][n] for p in every.values()) / len(every) for n in splits}
            for flips in (False, True)
        }
        results["ensemble"] = {}
    for name, probs in every.items():
        scores, best, pred = options(probs, splits)
        figures = evaluate(pred, test)
        results[name] |= {"val_dice_mean": scores, "chosen_on_val": best} | {
            f"test_{key}": float(figures[key]) for key in (*TEST_FIGURES, "dice3d_mean")
        }
        print(
            f"{name}: chosen on val '{best}' ({scores[best]:.4f}), test Dice "
            f"{figures['dice_mean']:.4f}, validity {figures['anatomical_validity']:.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
