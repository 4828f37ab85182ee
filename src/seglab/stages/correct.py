"""``seglab correct``: correct a user's label volume with a trained NVAE corrector.

The volume (ACDC labels: 0 background, 1 RV, 2 MYO, 3 LV) and its MR image are preprocessed
like the training data, cropped around the volume's own heart (:mod:`seglab.data.geometry`);
the corrector maps each slice (a 4-channel corrector) or each slice's 3-gram (previous, current
and next slice, an all-background map beyond the ends; a 12-channel corrector) to a corrected
slice (:func:`seglab.evaluation.correction.correct`), and the changes are written back in the
volume's own geometry: same shape, affine, header and spacing; slices the correction did not
change, and every voxel outside the crop, keep their labels bit for bit. ``gated`` keeps a
slice's input unless the corrector earns the change (:func:`seglab.evaluation.correction.gate`),
as in the correction study.

The model is a registry URI (``models:/acdc-nvae-corrector@champion``, ``models:/NAME/N``,
``runs:/...``) or the path of a corrector checkpoint (``models/correctors/nvae.ckpt``). Beside
the volume a CSV gives per-slice QC: agreement of input and correction, the input's
plausibility to the NVAE of ground-truth masks (when ``<root>/<nvae.models>/nvae.ckpt`` is
there), anatomical validity before and after, whether the correction erased the input's heart
(``emptied``: all background where the input is not; never valid, never taken by the gate, and
named in the summary), and whether the correction was taken.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import mlflow.models
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from seglab.config import CardiacParams
from seglab.data.acdc import LABELS
from seglab.data.acdcseg import onehot, trigram_context
from seglab.data.geometry import merge, to_slices
from seglab.data.store import SliceSet
from seglab.errors import DataError, SeglabError
from seglab.evaluation.correction import correct, gate, mask_agreement, plausibility
from seglab.io import atomic_file
from seglab.metrics.anatomy import check_slices
from seglab.metrics.emptied import check_against
from seglab.models.nvae import Nvae
from seglab.stages.nvae import CHECKPOINT, load_nvae
from seglab.tracking.registry import load_model, resolve_version
from seglab.tracking.runs import resolve_uri
from seglab.training.fit import default_eval_batch

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_READ_ERRORS = (
    OSError,  # includes gzip.BadGzipFile and truncated data
    EOFError,
    zlib.error,
    ValueError,
    WrapStructError,
    HeaderDataError,
    ImageFileError,
)
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
    """The corrector behind a registry URI or a checkpoint path."""
    if not _URI.match(model):
        net = load_nvae(Path(model)).model
        return Corrector(net, net.in_channels, net.image_size, str(model))
    store = resolve_uri(params.tracking.uri, root)
    try:
        net = load_model(model, params.tracking, root, map_location="cpu")
        name = model
        if model.startswith("models:/"):
            version = resolve_version(model, params.tracking, root)
            name = f"{model} (version {version.version})"
    except SeglabError as exc:
        text = str(exc) if str(exc).startswith(model) else f"{model}: {exc}"
        raise SeglabError(f"{text} (registry: {store})") from exc
    return Corrector(net, *_input_shape(model), name=name)  # exported: eval() is refused


def _input_shape(uri: str) -> tuple[int, int]:
    """``(in_channels, image_size)`` from a logged model's signature ``[-1, C, S, S]``."""
    try:
        signature = mlflow.models.get_model_info(uri).signature
        shape = signature.inputs.to_dict()[0]["tensor-spec"]["shape"]
    except (MlflowException, OSError, AttributeError, KeyError, IndexError) as exc:
        raise SeglabError(f"{uri}: no tensor input signature to read its input shape") from exc
    if len(shape) != 4 or shape[2] != shape[3] or min(shape[1:]) < 1:
        raise SeglabError(f"{uri}: input signature {shape} is not [batch, channels, S, S]")
    return int(shape[1]), int(shape[2])


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
    if not out.name.endswith(_NIFTI_SUFFIXES):
        raise SeglabError(f"{out}: the corrected volume must be a .nii or .nii.gz file")
    qc_out = Path(qc_out) if qc_out is not None else _qc_path(out)
    seg_nii, labels = _read_labels(seg)
    volume = _read_image(image, seg, labels.shape)
    spacing = _spacing(seg_nii, seg)

    corrector = load_corrector(model, params, root)
    prepare = params.acdc.prepare
    if corrector.image_size != prepare.size:
        raise SeglabError(
            f"{corrector.name}: the corrector takes {corrector.image_size}x"
            f"{corrector.image_size} slices but acdc.prepare.size is {prepare.size}"
        )
    gt_nvae = _plausibility_nvae(params, root, required=gated)

    slices, geometry = to_slices(volume, labels, spacing, prepare)
    before = slices.label
    after = corrector(_inputs(before, corrector.in_channels, corrector.name))
    agreement = mask_agreement(before, after)
    valid_before = check_slices(before, slices.spacing).valid
    checked = check_against(after, before, slices.spacing)  # an erased heart is never valid
    valid_corrected, emptied = checked.valid, checked.emptied
    plaus = plausibility(gt_nvae, before) if gt_nvae is not None else None
    taken = np.ones(len(before), bool)
    if gated:
        score = plaus if plaus is not None else np.ones(len(before))
        decision = gate(before, after, valid_before, valid_corrected, score, params.correctors.gate)
        after, taken = decision.labels, decision.taken
    valid_after = np.where(taken, valid_corrected, valid_before)

    corrected = merge(labels, before, after, geometry)
    changed_voxels = (corrected != labels).sum(axis=(0, 1))
    qc = pd.DataFrame(
        {
            "slice": np.arange(len(before)),
            "agreement": agreement,
            "plausibility": plaus if plaus is not None else np.full(len(before), np.nan),
            "valid_before": valid_before,
            "valid_corrected": valid_corrected,
            "emptied": emptied,
            "valid_after": valid_after,
            "taken": taken,
            "changed_voxels": changed_voxels,
        },
        columns=list(QC_COLUMNS),
    )
    _write_volume(out, seg_nii, corrected)
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


def _qc_path(out: Path) -> Path:
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


def _plausibility_nvae(params: CardiacParams, root: Path, *, required: bool) -> Nvae | None:
    """The NVAE of ground-truth masks when its checkpoint is there; gating by plausibility
    needs it."""
    path = root / params.nvae.models / CHECKPOINT
    needed = required and params.correctors.gate.plausibility_below is not None
    if not path.is_file():
        if needed:
            raise SeglabError(
                f"{path}: gated correction needs the NVAE of ground-truth masks to score "
                "plausibility (train it with `dvc repro train_nvae`, or set "
                "correctors.gate.plausibility_below to null)"
            )
        return None
    net = load_nvae(path).model
    if net.in_channels != 4 or net.image_size != params.acdc.prepare.size:
        raise SeglabError(
            f"{path}: the NVAE takes [{net.in_channels}, {net.image_size}, {net.image_size}] "
            f"inputs, not one-hot masks of {params.acdc.prepare.size}x{params.acdc.prepare.size}"
        )
    return net


def _read(path: Path, what: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A NIfTI volume as ``(image, voxels)``; 4D with one time point counts as 3D."""
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    try:
        nii = nib.load(path)
        data = np.asanyarray(nii.dataobj)  # reading the voxels detects truncation
    except _READ_ERRORS as exc:
        reason = " ".join(str(exc).split())
        raise DataError(path, f"not a readable NIfTI {what} ({reason})") from None
    if not isinstance(nii, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(path, f"not a NIfTI {what} ({type(nii).__name__})")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D {what} (x, y, z), got shape {data.shape}")
    return nii, data


def _read_labels(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    nii, data = _read(path, "label volume")
    values = np.unique(data).tolist()
    whole = [v for v in values if math.isfinite(v) and float(v).is_integer()]
    bad = [v for v in values if v not in whole] + [v for v in whole if int(v) not in LABELS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise DataError(path, f"label values must be 0..3 (background, RV, MYO, LV), found {shown}")
    return nii, data.astype(np.uint8)


def _read_image(path: Path, seg: Path, shape: tuple[int, ...]) -> np.ndarray:
    _, data = _read(path, "image")
    if data.shape != shape:
        raise DataError(
            path, f"image shape {data.shape} differs from the label volume's {shape} ({seg})"
        )
    volume = data.astype(np.float32)
    if not np.isfinite(volume).all():
        raise DataError(path, "image contains NaN or infinite values")
    return volume


def _spacing(nii: nib.Nifti1Image, path: Path) -> tuple[float, float, float]:
    zooms = tuple(float(z) for z in nii.header.get_zooms()[:3])
    if len(zooms) != 3 or not all(math.isfinite(z) and z > 0 for z in zooms):
        raise DataError(path, f"invalid voxel spacing {zooms} in the header")
    return zooms[0], zooms[1], zooms[2]


def _write_volume(out: Path, like: nib.Nifti1Image, labels: np.ndarray) -> None:
    """``labels`` in ``like``'s shape, dtype, affine and header, written atomically."""
    data = labels.reshape(like.shape).astype(like.get_data_dtype())
    result = type(like)(data, like.affine, like.header)
    payload = result.to_bytes()
    with atomic_file(out) as tmp:
        tmp.write_bytes(gzip.compress(payload, 6) if out.name.endswith(".gz") else payload)
