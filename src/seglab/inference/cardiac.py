"""The study's chain for a new patient: MR image -> segmentation -> (optionally) anatomically
plausible correction -> the figures a cardiologist reads (``seglab segment``).

Each frame is preprocessed as the training data was (:func:`~seglab.data.geometry.to_slices`),
without ground truth: with the ED and ES images the crop is centred where the image moves
between them (:func:`~seglab.data.preprocess.motion_centre`, the study's ``motion`` crop), with
one image on its centre. The segmenter predicts slice by slice (:mod:`seglab.inference.segment`),
a corrector may correct (:mod:`seglab.inference.correct`), and the labels go back onto the
input's own voxel grid and header. With ED and ES the report holds the clinical indices (LV/RV
EDV, ESV, EF, MYO mass, :mod:`seglab.metrics.clinical`); for every frame the per-slice anatomical
validity, the plausibility of each slice to the NVAE of ground-truth masks (when it is there),
the slices a reader should check, and which model versions and runs made it.

Everything is computed before anything is written: bad input stops the command with one line
naming the file, and no output is left half-written; an output that is an input is refused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from seglab.config import AcdcPrepareParams, CardiacParams, GateParams
from seglab.data.acdc import AcdcFrame, parse_info
from seglab.data.geometry import restore, to_slices
from seglab.data.preprocess import motion_centre
from seglab.data.store import SliceSet
from seglab.errors import DataError, SeglabError
from seglab.inference.correct import (
    Corrector,
    correct_slices,
    plausibility_nvae,
    plausibility_of,
)
from seglab.inference.segment import Segmenter
from seglab.inference.volume import NIFTI_SUFFIXES, read_image, spacing_of, write_like
from seglab.io import refuse_overwriting_inputs, write_json
from seglab.metrics.anatomy import check_slices
from seglab.metrics.clinical import clinical_indices

PHASES = ("ED", "ES")


def patient_images(folder: Path) -> dict[str, Path]:
    """The ED and ES images of an ACDC patient folder (frame numbers from its Info.cfg)."""
    info_file = Path(folder) / "Info.cfg"
    if not info_file.is_file():
        raise DataError(folder, "not an ACDC patient folder (no Info.cfg)")
    info = parse_info(info_file.read_text(errors="replace"), info_file)
    return {
        phase: Path(folder) / f"{Path(folder).name}_frame{frame:02d}.nii.gz"
        for phase, frame in (("ED", info.ed), ("ES", info.es))
    }


def default_outputs(out: Path, phases: tuple[str, ...]) -> dict[str, Path]:
    """``OUT`` for the first frame; ``<stem>_es.nii.gz`` beside it for the ES frame."""
    if not out.name.endswith(NIFTI_SUFFIXES):
        raise SeglabError(f"{out}: the segmentation must be a .nii or .nii.gz file")
    suffix = next(x for x in (".nii.gz", ".nii") if out.name.endswith(x))
    stem = out.name[: -len(suffix)]
    return {
        phase: out if i == 0 else out.with_name(f"{stem}_{phase.lower()}{suffix}")
        for i, phase in enumerate(phases)
    }


@dataclass(frozen=True)
class Volume:
    """One input frame: its NIfTI (geometry and header for the output), voxels and spacing."""

    nii: nib.Nifti1Image
    voxels: np.ndarray  # float32 (x, y, z)
    spacing: tuple[float, float, float]
    source: str  # the file (or request field) it came from, for errors and the report


@dataclass(frozen=True)
class FrameResult:
    """One frame segmented: its label volume on the input's grid and its per-slice checks."""

    source: str
    labels: np.ndarray  # uint8 (x, y, z), the input's grid
    spacing: tuple[float, float, float]
    valid: np.ndarray  # bool [z]: anatomically valid slices
    plausibility: np.ndarray | None  # [z]: Dice of each slice with its NVAE reconstruction
    empty: np.ndarray  # bool [z]: slices with no heart at all
    correction: pd.DataFrame | None = None  # per-slice QC of the correction

    def check(self, plausibility_below: float | None) -> list[int]:
        """Slices a reader should look at: a heart that is not anatomically valid, or one the
        NVAE of ground-truth masks finds implausible."""
        flagged = ~self.valid & ~self.empty
        if self.plausibility is not None and plausibility_below is not None:
            flagged |= ~self.empty & (self.plausibility < plausibility_below)
        return [int(z) for z in np.flatnonzero(flagged)]

    def summary(self, plausibility_below: float | None) -> dict[str, Any]:
        """The frame's part of the report."""
        qc = self.correction
        return {
            "image": self.source,
            "slices": len(self.valid),
            "valid_slices": int(self.valid.sum()),
            "anatomical_validity": float(self.valid.mean()) if len(self.valid) else math.nan,
            "slice_valid": [bool(v) for v in self.valid],
            "slice_empty": [bool(v) for v in self.empty],
            "slice_plausibility": (
                [round(float(p), 4) for p in self.plausibility]
                if self.plausibility is not None
                else None
            ),
            "plausibility": (
                float(np.nanmean(self.plausibility)) if self.plausibility is not None else None
            ),
            "slices_to_check": self.check(plausibility_below),
            "corrected_slices": (
                int((qc["taken"] & (qc["agreement"] < 1)).sum()) if qc is not None else None
            ),
        }


@dataclass(frozen=True)
class SegmentReport:
    """What the chain did and measured (``to_dict`` is the report's JSON)."""

    frames: dict[str, FrameResult]
    models: dict[str, dict[str, str | None]]
    plausibility_below: float | None
    seconds: float
    clinical: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": self.models,
            "frames": {p: f.summary(self.plausibility_below) for p, f in self.frames.items()},
            "clinical": self.clinical,
            "seconds": self.seconds,
        }

    def render(self, outs: Mapping[str, Path]) -> str:
        """A short summary for the terminal."""
        lines = [f"segmented with {self.models['segmenter']['name']}"]
        if "corrector" in self.models:
            lines.append(f"  corrected with {self.models['corrector']['name']}")
        for phase, f in self.frames.items():
            check = f.check(self.plausibility_below)
            lines.append(
                f"  {phase}: {outs[phase]} ({len(f.valid)} slices, {int(f.valid.sum())} "
                f"anatomically valid; check: {', '.join(map(str, check)) if check else 'none'})"
            )
        if self.clinical:
            c = self.clinical
            lines.append(
                f"  LV EDV {c['lv_edv_ml']:.1f} ml, ESV {c['lv_esv_ml']:.1f} ml, "
                f"EF {c['lv_ef_pct']:.1f}%; RV EDV {c['rv_edv_ml']:.1f} ml, "
                f"ESV {c['rv_esv_ml']:.1f} ml, EF {c['rv_ef_pct']:.1f}%; "
                f"MYO mass {c['myo_mass_g']:.1f} g"
            )
        lines.append(f"  {self.seconds:.1f} s")
        return "\n".join(lines)


@dataclass(frozen=True)
class Chain:
    """The models and settings of the chain: a segmenter, optionally a corrector (``gated``:
    only where it earns the change) and the NVAE of ground-truth masks (plausibility)."""

    segmenter: Segmenter
    prepare: AcdcPrepareParams
    gate: GateParams
    corrector: Corrector | None = None
    gated: bool = False
    gt_nvae: Corrector | None = None  # the NVAE of ground-truth masks: plausibility

    @classmethod
    def from_params(
        cls,
        segmenter: Segmenter,
        params: CardiacParams,
        root: Path,
        corrector: Corrector | None = None,
        gated: bool = False,
    ) -> Chain:
        """The chain with the project's preprocessing, gate and NVAE of ground-truth masks."""
        gate = params.correctors.gate_for(corrector.gate if corrector is not None else None)
        gt_nvae = plausibility_nvae(params, root, gate if gated else None)
        return cls(segmenter, params.acdc.prepare, gate, corrector, gated, gt_nvae)

    def models(self) -> dict[str, dict[str, str | None]]:
        s = self.segmenter
        models = {"segmenter": {"name": s.name, "version": s.version, "run_id": s.run_id}}
        if self.corrector is not None:
            models["corrector"] = {"name": self.corrector.name, "version": None, "run_id": None}
        return models

    def __call__(self, volumes: Mapping[str, Volume]) -> SegmentReport:
        """Segment (and correct) each frame; with ED and ES, the clinical indices too."""
        start = time.perf_counter()
        centre = None
        if set(PHASES) <= volumes.keys():
            ed, es = volumes["ED"], volumes["ES"]
            if ed.voxels.shape != es.voxels.shape or not np.allclose(ed.spacing, es.spacing):
                raise DataError(
                    es.source,
                    f"the ES image ({es.voxels.shape}, spacing {es.spacing}) is not on the ED "
                    f"image's grid ({ed.voxels.shape}, spacing {ed.spacing})",
                )
            centre = motion_centre(_frame("ED", ed), _frame("ES", es))
        frames = {name: self._frame(volume, centre) for name, volume in volumes.items()}
        clinical = {}
        if set(PHASES) <= frames.keys():
            ed_labels, es_labels = frames["ED"].labels, frames["ES"].labels
            clinical = clinical_indices(ed_labels, es_labels, frames["ED"].spacing)
        return SegmentReport(
            frames=frames,
            models=self.models(),
            plausibility_below=self.gate.plausibility_below if self.gt_nvae is not None else None,
            seconds=time.perf_counter() - start,
            clinical=clinical,
        )

    def _frame(self, volume: Volume, centre: tuple[float, float] | None) -> FrameResult:
        empty = np.zeros(volume.voxels.shape, np.uint8)
        slices, geometry = to_slices(volume.voxels, empty, volume.spacing, self.prepare, centre)
        pred = self.segmenter(_slice_set(slices.image))
        qc = None
        if self.corrector is not None:
            gate = self.gate if self.gated else None
            pred, qc = correct_slices(pred, slices.spacing, self.corrector, self.gt_nvae, gate)
        nvae = self.gt_nvae
        return FrameResult(
            source=volume.source,
            labels=restore(pred, geometry),
            spacing=volume.spacing,
            valid=check_slices(pred, slices.spacing).valid,
            plausibility=plausibility_of(nvae, pred) if nvae is not None else None,
            empty=~pred.reshape(len(pred), -1).any(axis=1),
            correction=qc,
        )


def _slice_set(image: np.ndarray) -> SliceSet:
    """One volume's slices as a slice set (the 2.5D input finds neighbours by these keys)."""
    n = len(image)
    meta = pd.DataFrame(
        {"patient": "input", "frame": 0, "slice_index": np.arange(n), "slice_count": n}
    )
    return SliceSet(image=image, label=np.zeros(image.shape, np.uint8), meta=meta)


def read_volume(path: Path) -> Volume:
    """An image file as a :class:`Volume` (one clear error naming a bad file)."""
    nii, voxels = read_image(path)
    return Volume(nii, voxels, spacing_of(nii, path), str(path))


def segment_images(
    images: Mapping[str, Path],
    outs: Mapping[str, Path],
    chain: Chain,
    report: Path | None = None,
) -> SegmentReport:
    """Segment each image file (``{"ED": path, "ES": path}``, or one frame under any name) into
    ``outs[name]`` in its own geometry, and the report (JSON) into ``report`` when given. Every
    input is read and every result computed before the first file is written."""
    for name, out in outs.items():
        if not str(out).endswith(NIFTI_SUFFIXES):
            raise SeglabError(f"{out}: the {name} segmentation must be a .nii or .nii.gz file")
    refuse_overwriting_inputs(
        {f"{name} output": out for name, out in outs.items()} | {"report": report},
        {f"{name} image": path for name, path in images.items()},
    )
    volumes = {name: read_volume(path) for name, path in images.items()}
    result = chain(volumes)
    for name, frame in result.frames.items():
        write_like(outs[name], volumes[name].nii, frame.labels, np.uint8)
    if report is not None:
        payload = result.to_dict()
        for name, out in outs.items():
            payload["frames"][name]["segmentation"] = str(out)
        write_json(report, payload)
    return result


def _frame(phase: str, volume: Volume) -> AcdcFrame:
    return AcdcFrame(
        patient="input",
        phase=phase,
        frame=0,
        image=volume.voxels,
        label=np.zeros(volume.voxels.shape, np.uint8),
        spacing=volume.spacing,
        affine=np.diag([*volume.spacing, 1.0]),
    )
