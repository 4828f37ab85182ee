"""How well an NVAE reconstructs masks, and how plausible the masks it generates are.

* Reconstruction: the posterior *means* are decoded (no sampling; batch norm in eval mode), so
  the figures are deterministic; Dice and HD95 per structure (``seglab.metrics.overlap``, keys
  ``dice_*``/``hd95_*``) against the targets, and the anatomical validity of the reconstructions
  (``anatomical_validity``) next to that of the targets themselves (``target_validity``, the
  ceiling a model that copied its targets would reach). A reconstruction that is all
  background where its target shows a heart is never valid; such slices are counted apart
  (``emptied``, and ``emptied_fraction`` of the targets with a heart:
  :mod:`seglab.metrics.emptied`).
* Generation: masks decoded from the prior (``temperature`` scales every std; the NVAE paper
  samples below 1 for sharper images) and the share of them that show a heart and are
  anatomically valid (``sample_validity``): a model that learned the shape of a heart generates
  valid hearts. An all-background mask passes every criterion but is no heart, so it counts as
  a failure here (``samples_empty`` says how many there were): a collapsed model that decodes
  every latent to background would otherwise score a perfect 1.

Inputs are one-hot ``[N, C, H, W]`` with ``C = 4 k`` (k stacked masks: 1 for a mask, 3 for the
previous/current/next 3-gram); targets are one-hot ``[N, 4, H, W]`` or label maps ``[N, H, W]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from seglab.config import NvaeStageParams, TrainerParams
from seglab.data.labels import NUM_LABELS, RV, STRUCTURE_LABELS, STRUCTURES
from seglab.inference.nvae import generate, input_labels, reconstruct
from seglab.metrics.anatomy import check_slices
from seglab.metrics.emptied import EMPTIED_KEYS, check_against
from seglab.metrics.overlap import OVERLAP_KEYS, overlap, summarize_overlap
from seglab.models.nvae import Nvae
from seglab.training.fit import eval_device
from seglab.training.nvae_module import NvaeModule

#: The figures' colours: background black, RV blue, MYO green, LV red (label order 0..3).
COLOURS = ListedColormap(["black", "tab:blue", "tab:green", "tab:red"])
#: The headline figures, first in every result (the project's metric keys).
KEYS = (
    *OVERLAP_KEYS,
    "anatomical_validity",
    *EMPTIED_KEYS,
    "target_validity",
    "sample_validity",
)


def evaluate_nvae(
    model: Nvae | NvaeModule,
    inputs: Tensor,
    targets: Tensor | np.ndarray,
    spacing: np.ndarray | Sequence[float],
    *,
    samples: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Reconstruction and (with ``samples`` > 0) generation figures of ``model``.

    ``spacing`` is each slice's pixel size ``[N, 2]`` in mm (or one pair); generated masks are
    judged at the median spacing. The :data:`KEYS` come first (``sample_validity`` only with
    samples), then the overlap summary's counts (slices, absent-structure cases).
    """
    if len(inputs) == 0:
        raise ValueError("nothing to evaluate: no slices")
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (len(inputs), 2))
    recon = reconstruct(model, inputs, batch_size=batch_size, device=device)
    target_labels = input_labels(targets) if np.ndim(targets) == 4 else targets
    target_labels = np.asarray(target_labels, dtype=np.uint8)
    summary = summarize_overlap(overlap(recon, target_labels, spacing))
    validity = check_against(recon, target_labels, spacing).summary()
    figures: dict[str, Any] = {
        **{k: summary[k] for k in OVERLAP_KEYS},
        "anatomical_validity": validity["anatomical_validity"],
        **{k: validity[k] for k in EMPTIED_KEYS},
        "target_validity": check_slices(target_labels, spacing).summary()["anatomical_validity"],
    }
    if samples > 0:
        generated = generate(
            model,
            samples,
            temperature=temperature,
            seed=seed,
            batch_size=batch_size,
            device=device,
        )
        valid = check_slices(generated, np.median(spacing, axis=0)).valid
        empty = (generated.reshape(samples, -1) == 0).all(axis=1)
        figures["sample_validity"] = float((valid & ~empty).mean())
        figures["samples"] = samples
        figures["samples_empty"] = int(empty.sum())
    return figures | {k: v for k, v in summary.items() if k not in figures}


def evaluate_as_configured(
    model: Nvae | NvaeModule,
    inputs: Tensor,
    targets: Tensor | np.ndarray,
    spacing: np.ndarray,
    report: NvaeStageParams,
    trainer: TrainerParams,
) -> dict[str, Any]:
    """:func:`evaluate_nvae` with the stage's sampling settings (``samples``, ``temperature``)
    and the training's seed, evaluation batch and device: what the NVAE stage and every search
    trial report, the same way."""
    return evaluate_nvae(
        model,
        inputs,
        targets,
        spacing,
        samples=report.samples,
        temperature=report.temperature,
        seed=trainer.seed,
        batch_size=trainer.eval_batch_size,
        device=eval_device(trainer),
    )


def _picks(labels: np.ndarray, rows: int) -> np.ndarray:
    """``rows`` indices spread over the slices that have foreground (all slices if none has)."""
    has_heart = np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1))
    pool = has_heart if len(has_heart) else np.arange(len(labels))
    return pool[np.linspace(0, len(pool) - 1, min(rows, len(pool))).round().astype(int)]


def show_mask(ax: Any, mask: np.ndarray, title: str) -> None:
    """One label map on ``ax`` in the report colours (every report's mask panels look alike)."""
    ax.imshow(mask, cmap=COLOURS, vmin=0, vmax=NUM_LABELS - 1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def add_legend(fig: Figure) -> None:
    """The structures' colour key under ``fig``."""
    names = {label: name.upper() for label, name in zip(STRUCTURE_LABELS, STRUCTURES, strict=True)}
    handles = [Patch(color=COLOURS(label), label=names[label]) for label in range(RV, NUM_LABELS)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)


def reconstruction_figure(
    inputs: np.ndarray,
    recon: np.ndarray,
    *,
    targets: np.ndarray | None = None,
    captions: Sequence[str] | None = None,
    rows: int = 6,
) -> Figure:
    """Input mask next to its reconstruction (and the target, when it differs from the input),
    for ``rows`` slices spread over the set; each reconstruction is titled with its Dice.

    All arrays are label maps ``[N, H, W]``; ``captions`` names each slice (patient, slice).
    """
    reference = inputs if targets is None else targets
    picks = _picks(reference, rows)
    dice = overlap(recon[picks], reference[picks], (1.0, 1.0)).dice_mean
    columns = [("input", inputs)] + ([("target", targets)] if targets is not None else [])
    fig = Figure(figsize=(2.4 * (len(columns) + 1), 2.5 * len(picks) + 0.4), layout="constrained")
    axes = fig.subplots(len(picks), len(columns) + 1, squeeze=False)
    for row, i, score in zip(axes, picks, dice, strict=True):
        caption = f"{captions[i]}: " if captions is not None else ""
        for ax, (name, masks) in zip(row, columns, strict=False):
            show_mask(ax, masks[i], f"{caption}{name}")
        show_mask(row[-1], recon[i], f"reconstruction, Dice {score:.3f}")
    add_legend(fig)
    return fig


def samples_figure(
    samples: np.ndarray, spacing: Sequence[float], *, columns: int = 4, count: int = 16
) -> Figure:
    """The first ``count`` generated masks, each titled valid, empty, or with its first failed
    anatomical criterion (judged at pixel size ``spacing``, mm)."""
    shown = samples[:count]
    result = check_slices(shown, np.asarray(spacing, dtype=np.float64))
    rows = max(1, -(-len(shown) // columns))
    fig = Figure(figsize=(2.4 * columns, 2.5 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= len(shown):
            ax.axis("off")
            continue
        failed = result.failed(i)
        extra = f" (+{len(failed) - 1})" if len(failed) > 1 else ""
        title = f"{failed[0]}{extra}" if failed else "valid" if shown[i].any() else "empty"
        show_mask(ax, shown[i], title)
    add_legend(fig)
    return fig
