"""Applying a corrector, scoring plausibility, and the gated correction.

Shared by the correction stage (ACDCSeg's test rows) and ``seglab correct`` (a user's volume),
so both correct, score and gate the same way.

* :func:`correct`: label maps (or 3-gram stacks of them) -> the corrector's posterior-mean
  reconstruction, one label map per slice.
* :func:`plausibility`: how well the NVAE of ground-truth masks reproduces a mask (mean Dice
  over the structures present in either): a mask it cannot reproduce is unlike any heart it
  learned, which flags slices to review without ground truth.
* :func:`gate`: keep the segmenter's mask unless the corrector earns the change (an erased
  heart never does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from seglab.config import GateParams
from seglab.data.acdcseg import onehot
from seglab.data.labels import STRUCTURE_LABELS
from seglab.inference.nvae import reconstruct
from seglab.metrics.emptied import emptied
from seglab.models.nvae import Nvae
from seglab.training.nvae_module import NvaeModule


def correct(
    model: Nvae | NvaeModule,
    labels: np.ndarray,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """uint8 ``[N, H, W]`` corrected maps from ``[N, H, W]`` maps (a 4-channel corrector) or
    ``[N, 3, H, W]`` 3-gram stacks (previous, current, next; a 12-channel corrector).

    One-hot encoding happens per chunk, so a large 3-gram set never exists as floats;
    ``batch_size`` null: :func:`~seglab.training.fit.default_eval_batch` for the device."""
    chunk = 256
    parts = [
        reconstruct(model, onehot(labels[i : i + chunk]), batch_size=batch_size, device=device)
        for i in range(0, len(labels), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *labels.shape[-2:]), np.uint8)


def mask_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per slice, the mean Dice of the structures present in ``a`` or ``b``; 1 when neither has
    any (two empty masks agree)."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    scores = np.full((len(a), len(STRUCTURE_LABELS)), np.nan)
    for k, label in enumerate(STRUCTURE_LABELS):
        x, y = a == label, b == label
        inter = (x & y).sum(axis=(1, 2))
        total = x.sum(axis=(1, 2)) + y.sum(axis=(1, 2))
        present = total > 0
        scores[present, k] = 2 * inter[present] / total[present]
    out = np.ones(len(a))
    some = ~np.isnan(scores).all(axis=1)
    out[some] = np.nanmean(scores[some], axis=1)
    return out


def plausibility(
    nvae: Nvae | NvaeModule,
    labels: np.ndarray,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Per slice in [0, 1]: agreement of each map with its reconstruction by the NVAE trained on
    ground-truth masks (low: the NVAE has not seen a heart like it)."""
    recon = correct(nvae, labels, batch_size=batch_size, device=device)
    return mask_agreement(labels, recon)


@dataclass(frozen=True)
class Gated:
    """The gated masks and, per slice, whether the corrector's mask was taken and why."""

    labels: np.ndarray  # uint8 [N, H, W]
    taken: np.ndarray  # bool [N]
    by_validity: np.ndarray  # bool [N]: corrected valid, input not
    by_plausibility: np.ndarray  # bool [N]: input implausible
    emptied: np.ndarray  # bool [N]: the correction erased the input's heart (never taken)


def gate(
    before: np.ndarray,
    after: np.ndarray,
    valid_before: np.ndarray,
    valid_after: np.ndarray,
    plausibility_before: np.ndarray,
    params: GateParams,
) -> Gated:
    """Take the corrected mask only where it is anatomically valid and the input was not
    (``params.validity``), or where the input's plausibility is below
    ``params.plausibility_below``; keep the segmenter's mask everywhere else.

    A correction that erases the input's heart (all background where the input is not,
    :func:`seglab.metrics.emptied.emptied`) is never taken, by either test: an empty mask
    breaks no criterion, and an NVAE that reconstructs every mask as background finds every
    heart implausible, so both tests would otherwise take the erasure."""
    n = len(before)
    erased = emptied(after, before)
    by_validity = np.zeros(n, bool)
    if params.validity:
        by_validity = np.asarray(valid_after, bool) & ~np.asarray(valid_before, bool) & ~erased
    by_plausibility = np.zeros(n, bool)
    if params.plausibility_below is not None:
        by_plausibility = (np.asarray(plausibility_before) < params.plausibility_below) & ~erased
    taken = by_validity | by_plausibility
    labels = np.where(taken[:, None, None], after, before).astype(np.uint8)
    return Gated(labels, taken, by_validity, by_plausibility, erased)


#: The registered version's tag (and the checkpoint's hyper-parameter) holding the chosen gate.
GATE_KEY = "gate"


def stored_gate(stored: Mapping[str, object]) -> GateParams | None:
    """The gate a corrector's training chose, from its checkpoint's hyper-parameters or its
    registered version's tags (a JSON string there); None where none is stored."""
    value = stored.get(GATE_KEY)
    if value is None:
        return None
    return GateParams.model_validate(json.loads(value) if isinstance(value, str) else value)
