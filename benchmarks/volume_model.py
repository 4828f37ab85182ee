"""A segmenter that sees the whole stack: does a 3D network find where the ventricles end?

The project's segmenters are 2D (2.5D with a neighbour on each side): the per-slice Dice they
lose is mostly whole slices at the base and apex that count 0 (README, "Where the per-slice
figure is lost"), and neither more neighbours nor more draws of the end slices moved that
(rounds 12 and 13). This trains MONAI's DynUNet (nnU-Net's network) in 3D on whole stacks,
``[1, H, W, D]`` per cardiac phase, with nnU-Net's anisotropic plan for thick-slice cine MRI:
in-plane kernels (3, 3, 1) at the three finest levels, 3D kernels (3, 3, 3) at the coarser
ones (where a slice away is as far as a few pixels), and pooling in-plane only, so every level
keeps the stack's ends. Everything else is the project's: the recipe (loss, optimiser,
schedule, augmentation, epochs) of ``segmenters.train_for(arch)`` in the params, the shared
training module and ``fit`` (checkpoints, history, progress lines), the flips and clean-up
chosen on the validation split only, and the stage's test figures (per-slice Dice, HD95,
validity, 3D Dice), with the slices that count 0 per structure. One stack per step (the stacks
hold 6-16 slices; instance norm). Checkpoints go to ``<out>.ckpt/``: run the same command again
and an interrupted training resumes there (a finished one is only scored again).

Run it where real ACDC is prepared (``seglab prepare acdc`` with ``profile: cpu``)::

    uv run --frozen python benchmarks/volume_model.py --params params.yaml --epochs 40 \\
        --out reports/real-acdc/recipe/round14-dynunet3d-40ep \\
        --ensemble models/segmenters/resunet.ckpt
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from common import prepared_acdc_parser  # siblings: benchmarks/ on sys.path
from inference_choices import TEST_FIGURES, probabilities
from monai.networks.nets import DynUNet
from torch import Tensor, nn
from torch.utils.data import DataLoader

from seglab.config import CardiacParams, load_params
from seglab.data.labels import NUM_LABELS, STRUCTURES
from seglab.data.store import SliceSet, load_splits, volume_rows
from seglab.evaluation.segmentation import evaluate, pick_inference
from seglab.inference.postprocess import Cleanup
from seglab.inference.segment import load_segmenter, module_input
from seglab.training.fit import fit, seed
from seglab.training.history import write_curves
from seglab.training.segmentation_module import (
    SegmentationModule,
    flip_averaged_softmax,
    recipe_kwargs,
)
from seglab.training.segmenters import CLASS_NAMES, MONITOR


def figures(pred: np.ndarray, slices: SliceSet) -> dict[str, float]:
    """The stage's test figures and 3D Dice, and per structure the slices that count 0: drawn
    by the network only (``false_positive``) or by the annotators only (``missed``)."""
    scores = evaluate(pred, slices)
    out = {k: float(scores[k]) for k in (*TEST_FIGURES, "dice3d_mean")}
    for name in STRUCTURES:
        out[f"{name}_false_positive"] = int(scores[f"{name}_absent_in_gt"])
        out[f"{name}_missed"] = int(scores[f"{name}_absent_in_pred"])
    return out


class StackNet(nn.Module):
    """A 3D network as the 2D loop sees it: a stack ``[B, D, H, W]`` in, the logits of its
    slices ``[B * D, C, H, W]`` out (so losses, flips and per-slice scores stay the 2D ones).

    Args:
        net: a 3D network taking ``[B, 1, H, W, D]``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, stack: Tensor) -> Tensor:
        b, d, h, w = stack.shape
        logits = self.net(stack.unsqueeze(1).permute(0, 1, 3, 4, 2))  # [B, C, H, W, D]
        return logits.permute(0, 4, 1, 2, 3).reshape(b * d, -1, h, w)


def dynunet(filters: Sequence[int], in_plane_levels: int) -> StackNet:
    """DynUNet with residual blocks, ``filters`` per level, kernels (3, 3, 1) at the first
    ``in_plane_levels`` levels and (3, 3, 3) below, every pooling in-plane only."""
    kernels = [(3, 3, 1) if i < in_plane_levels else (3, 3, 3) for i in range(len(filters))]
    strides = [(1, 1, 1)] + [(2, 2, 1)] * (len(filters) - 1)
    net = DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=NUM_LABELS,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(filters),
        res_block=True,
    )
    return StackNet(net)


class StackModule(SegmentationModule):
    """The shared module on stacks: labels ``[B, D, H, W]`` flattened to the slices' labels."""

    def _label_map(self, label: Tensor) -> Tensor:
        return label.reshape(-1, *label.shape[-2:])


def stacks(slices: SliceSet) -> tuple[list[tuple[Tensor, Tensor]], np.ndarray]:
    """Each volume's ``(image [D, H, W], label [D, H, W])``, and the slice rows in that order."""
    volumes = volume_rows(slices.meta)
    pairs = [
        (torch.from_numpy(slices.image[rows]).float(), torch.from_numpy(slices.label[rows]).long())
        for rows in volumes
    ]
    return pairs, np.concatenate(volumes)


class StackData(L.LightningDataModule):
    """One stack per batch: a seeded shuffle for training, the volumes in order otherwise."""

    def __init__(self, train: list, val: list, seed: int) -> None:
        super().__init__()
        self.train, self.val, self.seed = train, val, seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train, batch_size=1, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=1)


def stack_probabilities(
    module: SegmentationModule, pairs: list, rows: np.ndarray, flips: bool
) -> Tensor:
    """Softmax ``[N, C, H, W]`` of every stack's slices, put back in the split's row order."""
    out = []
    with torch.no_grad():
        for image, _ in pairs:
            x = image[None]
            out.append(flip_averaged_softmax(module, x) if flips else module(x).softmax(1))
    probs = torch.cat(out)
    return probs[torch.from_numpy(np.argsort(rows))]


Probabilities = dict[bool, dict[str, Tensor]]  # flips -> split -> softmax


def argmax(probs: Tensor) -> np.ndarray:
    """uint8 ``[N, H, W]`` label maps: each pixel's most probable class."""
    return probs.argmax(1).numpy().astype(np.uint8)


def chosen_inference(
    probs: Probabilities,
    splits: dict[str, SliceSet],
    decode: Callable[[Tensor], np.ndarray] = argmax,
    fixed: Cleanup | None = None,
) -> dict[str, Any]:
    """Flips and clean-up chosen as the stage chooses them, on the validation Dice alone (the
    clean-up only ``fixed`` when given); then the figures of both splits with that choice, and
    the test split's without any. ``decode`` turns a softmax into label maps (the argmax, as the
    stage does, unless told otherwise)."""
    val, test = splits["val"], splits["test"]
    volumes = {name: volume_rows(splits[name].meta) for name in ("val", "test")}
    labels = {f: {n: decode(p) for n, p in by.items()} for f, by in probs.items()}
    flips, cleanup, scores = pick_inference({f: by["val"] for f, by in labels.items()}, val, fixed)
    value = scores[("flips_" if flips else "") + cleanup.name]
    chosen = {n: cleanup.apply(labels[flips][n], volumes[n]) for n in ("val", "test")}
    return {
        "chosen_on_val": ("flips, " if flips else "") + cleanup.describe(),
        "flips": flips,
        "cleanup": cleanup.hparams(),
        "chosen_val_dice_mean": value,
        "val_dice_mean_options": scores,
        "val": figures(chosen["val"], val),
        "test_raw": figures(labels[False]["test"], test),
        "test": figures(chosen["test"], test),
    }


def two_d_probabilities(module: SegmentationModule, splits: dict[str, SliceSet]) -> Probabilities:
    """A 2D segmenter's softmax of the validation and test slices, with and without flips."""
    images = {n: module_input(module, splits[n]) for n in ("val", "test")}
    return {
        f: {n: probabilities(module.network, x, f) for n, x in images.items()}
        for f in (False, True)
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = prepared_acdc_parser(__doc__)
    parser.add_argument("--recipe", default="resunet", help="whose segmenters.train_for recipe")
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--in-plane-levels", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="instead of the recipe's")
    parser.add_argument("--limit-train-batches", type=float, default=1.0)
    parser.add_argument(
        "--ensemble",
        type=Path,
        nargs="*",
        default=[],
        help="2D segmenter checkpoints: score each, and the mean of their softmax and the 3D's",
    )
    args = parser.parse_args(argv)
    params = load_params(args.params, CardiacParams)
    recipe = params.segmenters.train_for(args.recipe)
    trainer_params = recipe.trainer.model_copy(
        update={
            "channels_last": False,  # a 2D memory format
            "limit_train_batches": args.limit_train_batches,
            **({"max_epochs": args.epochs} if args.epochs else {}),
        }
    )
    splits = load_splits(args.prepared)
    pairs = {name: stacks(s) for name, s in splits.items()}
    seed(trainer_params)
    module = StackModule(
        dynunet(args.filters, args.in_plane_levels),
        NUM_LABELS,
        **recipe_kwargs(recipe),
        class_names=CLASS_NAMES,
        monitor=MONITOR,
    )
    params_count = sum(p.numel() for p in module.parameters())
    print(f"DynUNet 3D {args.filters}, {params_count / 1e6:.2f}M parameters", file=sys.stderr)
    folder = args.out.with_name(args.out.name + ".ckpt")
    result = fit(
        module,
        StackData(pairs["train"][0], pairs["val"][0], trainer_params.seed),
        trainer_params,
        folder,
        monitor=MONITOR,
    )
    write_curves(result.history, args.out.with_name(args.out.name + ".curves.csv"))
    state = torch.load(result.best_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    probs: Probabilities = {
        flips: {n: stack_probabilities(module, *pairs[n], flips) for n in ("val", "test")}
        for flips in (False, True)
    }
    test = splits["test"]
    result_json: dict[str, Any] = {
        "network": f"DynUNet 3D, filters {args.filters}, in-plane levels {args.in_plane_levels}",
        "params": params_count,
        "recipe": args.recipe,
        "epochs": result.epochs,
        "best_epoch": int(max(result.history, key=lambda r: r.get(MONITOR, -1))["epoch"]),
        "best_val_dice_mean": result.best_score,
        "train_seconds": round(result.history[-1]["seconds"], 1),  # across resumes
        **chosen_inference(probs, splits),
        "test_patients": int(test.meta["patient"].nunique()),
        "test_slices": len(test),
    }
    if args.ensemble:
        every = [probs] + [
            two_d_probabilities(load_segmenter(p).eval(), splits) for p in args.ensemble
        ]
        for path, two_d in zip(args.ensemble, every[1:], strict=True):
            result_json[path.stem] = chosen_inference(two_d, splits)
        mean = {f: {n: sum(p[f][n] for p in every) / len(every) for n in probs[f]} for f in probs}
        result_json["ensemble"] = chosen_inference(mean, splits)
    args.out.with_name(args.out.name + ".json").write_text(json.dumps(result_json, indent=1) + "\n")
    print(json.dumps(result_json, indent=1))
    return result_json


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
