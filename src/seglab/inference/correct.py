"""Correct a user's label volume with a trained NVAE corrector (``seglab correct``).

The volume (ACDC labels: 0 background, 1 RV, 2 MYO, 3 LV) and its MR image are preprocessed
like the training data, cropped around the volume's own heart (:mod:`seglab.data.geometry`);
the corrector maps each slice (a 4-channel corrector) or each slice's 3-gram (previous, current
and next slice, an all-background map beyond the ends; a 12-channel corrector) to a corrected
slice (:func:`seglab.inference.correction.correct`), and the changes are written back in the
volume's own geometry: same shape, affine, header and spacing; slices the correction did not
change, and every voxel outside the crop, keep their labels bit for bit. ``gated`` keeps a
slice's input unless the corrector earns the change (:func:`seglab.inference.correction.gate`),
as in the correction study.

The model is a registry URI (``models:/acdc-nvae-corrector@champion``, ``models:/NAME/N``,
``runs:/...``) or the path of a corrector checkpoint (``models/correctors/nvae.ckpt``). Beside
the volume a CSV gives per-slice QC: agreement of input and correction, the input's
plausibility to the NVAE of ground-truth masks (when ``<root>/<nvae.models>/nvae.ckpt`` is
there), anatomical validity before and after, whether the correction erased the input's heart
(``emptied``: all background where the input is not; never valid, never taken by the gate, and
named in the summary), and whether the correction was taken.

The gate is the one the corrector's training chose on validation rows (``correctors.gate:
auto``; stored in its checkpoint and as its registered version's ``gate`` tag), or the one
``correctors.gate`` fixes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seglab.config import CardiacParams, GateParams
from seglab.data.acdcseg import onehot, trigram_context
from seglab.data.geometry import merge, to_slices
from seglab.data.store import SliceSet
from seglab.errors import SeglabError
from seglab.inference.correction import correct, gate, mask_agreement, stored_gate
from seglab.inference.nvae import CHECKPOINT, load_nvae
from seglab.inference.volume import NIFTI_SUFFIXES, read_image, read_labels, spacing_of, write_like
from seglab.io import atomic_file
from seglab.metrics.anatomy import check_slices
from seglab.metrics.emptied import check_against
from seglab.models.nvae import Nvae
from seglab.tracking.models import input_shape
from seglab.tracking.registry import load_model, resolve_version
from seglab.tracking.runs import resolve_uri
from seglab.training.fit import default_eval_batch

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
QC_COLUMNS = (
    "slice",
    "agreement",
    "plausibility",
    "valid_before",
    "valid_corrected",
    "emptied",
    "valid_after",
    "taken",
    "changed_voxels",
)


@dataclass(frozen=True)
class Corrector:
    """A corrector however it was stored: an NVAE from a checkpoint, or a registered model
    (``NvaeReconstructor``, loaded as an exported program) that maps one-hot maps to logits."""

    net: torch.nn.Module
    in_channels: int  # 4: one slice; 12: a 3-gram
    image_size: int
    name: str  # what was loaded, for the summary
    gate: GateParams | None = None  # the gate its training chose (None: none stored)

    def __call__(self, inputs: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """uint8 ``[N, H, W]`` corrected maps from ``[N, H, W]`` maps or ``[N, 3, H, W]`` (on the
        CPU; ``batch_size`` null: the CPU's default inference batch)."""
        batch_size = batch_size or default_eval_batch(torch.device("cpu"))
        if isinstance(self.net, Nvae):
            return correct(self.net, inputs, batch_size=batch_size)
        with torch.no_grad():
            parts = [
                self.net(onehot(inputs[i : i + batch_size])).argmax(1).to(torch.uint8).numpy()
                for i in range(0, len(inputs), batch_size)
            ]
        return np.concatenate(parts)


@dataclass(frozen=True)
class CorrectSummary:
    """What :func:`correct_volume` did, for the terminal."""

    seg: Path
    image: Path
    out: Path
    qc: Path
    model: str  # the corrector loaded (registry version or checkpoint path)
    in_channels: int
    gated: bool
    slices: int
    changed: int  # slices of the written volume that differ from the input
    taken: int  # slices whose correction was taken (all of them unless gated)
    agreement: float  # mean per-slice agreement of input and correction
    valid_before: int
    valid_after: int
    plausibility: float | None  # mean plausibility of the input (no NVAE checkpoint: None)
    emptied: tuple[int, ...] = ()  # slices whose correction erased the input's heart
    emptied_written: bool = False  # ... and were written so (plain mode); gated: input kept


def load_corrector(model: str, params: CardiacParams, root: Path) -> Corrector:
    """The corrector behind a registry URI or a checkpoint path, with the gate it chose."""
    if not _URI.match(model):
        net = load_nvae(Path(model)).model
        hparams = torch.load(model, map_location="cpu", weights_only=False)["hyper_parameters"]
        return Corrector(net, net.in_channels, net.image_size, str(model), stored_gate(hparams))
    store = resolve_uri(params.tracking.uri, root)
    tags: Mapping[str, str] = {}
    try:
        net = load_model(model, params.tracking, root, map_location="cpu")
        name = model
        if model.startswith("models:/"):
            version = resolve_version(model, params.tracking, root)
            name, tags = f"{model} (version {version.version})", version.tags or {}
    except SeglabError as exc:
        text = str(exc) if str(exc).startswith(model) else f"{model}: {exc}"
        raise SeglabError(f"{text} (registry: {store})") from exc
    # exported: eval() is refused
    return Corrector(net, *input_shape(model), name=name, gate=stored_gate(tags))


def correct_volume(
    seg: Path,
    image: Path,
    out: Path,
    *,
    model: str,
    params: CardiacParams,
    root: Path,
    gated: bool = False,
    qc_out: Path | None = None,
) -> CorrectSummary:
    """Correct the label volume ``seg`` (with its ``image``) and write it to ``out`` in the
    input's geometry, with per-slice QC scores in ``qc_out`` (default: ``OUT`` with
    ``.qc.csv``). Bad input raises :class:`DataError` naming the file; nothing is written."""
    seg, image, out, root = Path(seg), Path(image), Path(out), Path(root)
    if not out.name.endswith(NIFTI_SUFFIXES):
        raise SeglabError(f"{out}: the corrected volume must be a .nii or .nii.gz file")
    qc_out = Path(qc_out) if qc_out is not None else qc_path(out)
    seg_nii, labels = read_labels(seg)
    _, volume = read_image(image, (seg, labels.shape))
    spacing = spacing_of(seg_nii, seg)

    corrector = load_corrector(model, params, root)
    prepare = params.acdc.prepare
    if corrector.image_size != prepare.size:
        raise SeglabError(
            f"{corrector.name}: the corrector takes {corrector.image_size}x"
            f"{corrector.image_size} slices but acdc.prepare.size is {prepare.size}"
        )
    gate_params = params.correctors.gate_for(corrector.gate) if gated else None
    gt_nvae = plausibility_nvae(params, root, gate_params)

    slices, geometry = to_slices(volume, labels, spacing, prepare)
    before = slices.label
    after, qc = correct_slices(before, slices.spacing, corrector, gt_nvae, gate_params)
    corrected = merge(labels, before, after, geometry)
    changed_voxels = (corrected != labels).sum(axis=(0, 1))
    qc["changed_voxels"] = changed_voxels
    plaus = qc["plausibility"].to_numpy() if gt_nvae is not None else None
    taken, emptied = qc["taken"].to_numpy(), qc["emptied"].to_numpy()
    valid_before, valid_after = qc["valid_before"].to_numpy(), qc["valid_after"].to_numpy()
    agreement = qc["agreement"].to_numpy()
    write_like(out, seg_nii, corrected)
    with atomic_file(qc_out) as tmp:
        qc.to_csv(tmp, index=False, float_format="%.6g")
    return CorrectSummary(
        seg=seg,
        image=image,
        out=out,
        qc=qc_out,
        model=corrector.name,
        in_channels=corrector.in_channels,
        gated=gated,
        slices=len(before),
        changed=int((changed_voxels > 0).sum()),
        taken=int(taken.sum()),
        agreement=float(agreement.mean()) if len(agreement) else math.nan,
        valid_before=int(valid_before.sum()),
        valid_after=int(valid_after.sum()),
        plausibility=float(plaus.mean()) if plaus is not None and len(plaus) else None,
        emptied=tuple(int(z) for z in np.flatnonzero(emptied)),
        emptied_written=bool((emptied & taken).any()),
    )


def correct_slices(
    before: np.ndarray,
    spacing: tuple[float, float],
    corrector: Corrector,
    gt_nvae: Corrector | None,
    gate_params: GateParams | None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Correct ``[z, S, S]`` slices of one volume; with ``gate_params``, keep each input slice
    unless the corrector earns the change. Returns the slices and their per-slice QC
    (:data:`QC_COLUMNS` but ``changed_voxels``, which only the written volume knows)."""
    after = corrector(_inputs(before, corrector.in_channels, corrector.name))
    valid_before = check_slices(before, spacing).valid
    checked = check_against(after, before, spacing)  # an erased heart is never valid
    plaus = plausibility_of(gt_nvae, before) if gt_nvae is not None else None
    taken = np.ones(len(before), bool)
    qc = pd.DataFrame(
        {
            "slice": np.arange(len(before)),
            "agreement": mask_agreement(before, after),
            "plausibility": plaus if plaus is not None else np.full(len(before), np.nan),
            "valid_before": valid_before,
            "valid_corrected": checked.valid,
            "emptied": checked.emptied,
        }
    )
    if gate_params is not None:
        score = plaus if plaus is not None else np.ones(len(before))
        decision = gate(before, after, valid_before, checked.valid, score, gate_params)
        after, taken = decision.labels, decision.taken
    qc["valid_after"] = np.where(taken, checked.valid, valid_before)
    qc["taken"] = taken
    return after, qc


def render_summary(summary: CorrectSummary) -> str:
    """A few lines: what was corrected with what, and how much changed."""
    s = summary
    mode = "gated" if s.gated else "plain"
    lines = [
        f"corrected {s.seg} -> {s.out}",
        f"  model: {s.model} ({s.in_channels} input channels, {mode} correction)",
        f"  slices: {s.slices}, changed: {s.changed}"
        + (f", correction taken on {s.taken}" if s.gated else ""),
        f"  mean agreement of input and correction: {s.agreement:.4f}",
        f"  anatomically valid slices: {s.valid_before}/{s.slices} before, "
        f"{s.valid_after}/{s.slices} after",
    ]
    if s.plausibility is not None:
        lines.append(f"  mean plausibility of the input: {s.plausibility:.4f}")
    if s.emptied:
        what = (
            "written as corrected and counted invalid (--gated keeps the input there)"
            if s.emptied_written
            else "not taken: the input is kept there"
        )
        lines.append(
            f"  emptied: the correction erased the heart of {len(s.emptied)} slice"
            f"{'s' if len(s.emptied) > 1 else ''} ({', '.join(map(str, s.emptied))}): {what}"
        )
    lines.append(f"  per-slice QC: {s.qc}")
    return "\n".join(lines)


def qc_path(out: Path) -> Path:
    """Where the per-slice QC of ``out`` goes by default: ``<stem>.qc.csv`` beside it."""
    stem = next(out.name[: -len(x)] for x in (".nii.gz", ".nii") if out.name.endswith(x))
    return out.with_name(f"{stem}.qc.csv")


def _inputs(labels: np.ndarray, in_channels: int, name: str) -> np.ndarray:
    """The corrector's input: the slices (4 channels) or their 3-gram stacks (12)."""
    if in_channels == 4:
        return labels
    if in_channels == 12:
        n = len(labels)
        meta = pd.DataFrame(
            {
                "segmenter": "input",
                "patient": "input",
                "frame": 0,
                "slice_index": np.arange(n),
                "slice_count": n,
            }
        )
        rows = SliceSet(image=labels, label=labels, meta=meta, extra={"pred": labels})
        return trigram_context(rows)
    raise SeglabError(f"{name}: {in_channels} input channels (a corrector takes 4 or 12)")


def plausibility_of(gt_nvae: Corrector, labels: np.ndarray) -> np.ndarray:
    """Per slice in [0, 1]: agreement of each map with its reconstruction by the NVAE of
    ground-truth masks (low: it has not seen a heart like it)."""
    return mask_agreement(labels, gt_nvae(labels))


def plausibility_nvae(
    params: CardiacParams, root: Path, gate_params: GateParams | None = None
) -> Corrector | None:
    """The NVAE of ground-truth masks when its checkpoint is there (as a 4-channel
    :class:`Corrector`: its reconstruction is what plausibility compares with); a gate with a
    plausibility test needs it."""
    path = root / params.nvae.models / CHECKPOINT
    if not path.is_file():
        if gate_params is not None and gate_params.plausibility_below is not None:
            raise SeglabError(
                f"{path}: the gate ({gate_params.name}) needs the NVAE of ground-truth masks to "
                "score plausibility (train it with `dvc repro train_nvae`, or fix a gate "
                "without it: correctors.gate: {validity: true, plausibility_below: null})"
            )
        return None
    net = load_nvae(path).model
    if net.in_channels != 4 or net.image_size != params.acdc.prepare.size:
        raise SeglabError(
            f"{path}: the NVAE takes [{net.in_channels}, {net.image_size}, {net.image_size}] "
            f"inputs, not one-hot masks of {params.acdc.prepare.size}x{params.acdc.prepare.size}"
        )
    return Corrector(net, 4, net.image_size, str(path))
