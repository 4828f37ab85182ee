"""The ``prepare_acdc`` stage: raw ACDC (or its phantom) -> patient-level splits of 2D slices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from seglab.config import AcdcDataParams
from seglab.data.acdc import PHASES, AcdcDataset, open_acdc
from seglab.data.preprocess import FrameSlices, frame_to_slices, motion_centre
from seglab.data.splits import patient_splits, rounding_note
from seglab.data.store import META_DTYPES, SliceSet, save_split
from seglab.io import atomic_dir, refuse_overwriting_inputs, write_json


def prepare_acdc(
    params: AcdcDataParams, qc: Callable[[SliceSet], dict[str, Any]] | None = None
) -> str:
    """Build ``params.prepared``: ``train/val/test.npz`` and ``meta.json``; returns a summary.

    ``qc`` scores each prepared split (the stage passes the anatomical-validity check of the
    ground truth; the data layer cannot import metrics itself); its result goes in meta.json.
    """
    refuse_overwriting_inputs({"acdc.prepared": params.prepared}, {"acdc.raw": params.raw})
    with open_acdc(params.raw) as dataset:
        groups = {p.id: p.info.group for p in dataset.patients}
        official_test = [p.id for p in dataset.patients if p.subset == "testing"]
        splits = patient_splits(groups, params.prepare.split, official_test)
        counts: dict[str, int] = {}
        coverage: list[float] = []
        quality: dict[str, dict[str, Any]] = {}
        with atomic_dir(params.prepared) as tmp:
            for split, ids in splits.items():
                slices, cov = _prepare_patients(dataset, ids, params, split)
                save_split(tmp / f"{split}.npz", slices)
                counts[split] = len(slices)
                coverage.extend(cov)
                if qc is not None and len(slices):
                    quality[split] = qc(slices)
            write_json(
                tmp / "meta.json",
                {
                    "source": str(params.raw),
                    "params": params.prepare.model_dump(mode="json"),
                    "splits": splits,
                    "slices": counts,
                    "groups": groups,
                    "crop_coverage_min": float(np.min(coverage)) if coverage else None,
                    "crop_coverage_mean": float(np.mean(coverage)) if coverage else None,
                    "qc": quality,
                },
            )
    parts = ", ".join(f"{k} {len(splits[k])} patients / {counts[k]} slices" for k in splits)
    checks = "".join(
        f"; {k} ground truth {100 * v['anatomical_validity']:.1f}% anatomically valid"
        for k, v in quality.items()
        if "anatomical_validity" in v
    )
    note = rounding_note(splits, params.prepare.split, fixed_test=bool(official_test))
    return (
        f"prepared ACDC into {params.prepared}: {parts}; crop '{params.prepare.crop}' kept "
        f"{100 * float(np.mean(coverage)):.2f}% of the heart "
        f"(worst frame {100 * min(coverage):.1f}%){checks}" + (f"\n{note}" if note else "")
    )


def _prepare_patients(
    dataset: AcdcDataset, ids: list[str], params: AcdcDataParams, split: str
) -> tuple[SliceSet, list[float]]:
    images, labels, rows, coverage = [], [], [], []
    size = params.prepare.size
    for pid in tqdm(ids, desc=f"prepare {split}", unit="patient", leave=False):
        patient = dataset.patient(pid)
        frames = {phase: dataset.load(pid, phase) for phase in PHASES}
        centre = None
        if params.prepare.crop == "motion":
            centre = motion_centre(frames["ED"], frames["ES"])
        for phase, frame in frames.items():
            fs: FrameSlices = frame_to_slices(frame, params.prepare, centre)
            images.append(fs.image)
            labels.append(fs.label)
            coverage.append(fs.coverage)
            nz = len(fs.image)
            rows.extend(
                {
                    "patient": pid,
                    "group": patient.info.group,
                    "phase": phase,
                    "frame": frame.frame,
                    "slice_index": z,
                    "slice_count": nz,
                    "spacing_x": fs.spacing[0],
                    "spacing_y": fs.spacing[1],
                    "thickness": fs.thickness,
                }
                for z in range(nz)
            )
    meta = pd.DataFrame(rows, columns=list(META_DTYPES)).astype(META_DTYPES)
    empty = np.zeros((0, size, size))
    return (
        SliceSet(
            image=np.concatenate(images) if images else empty.astype(np.float32),
            label=np.concatenate(labels) if labels else empty.astype(np.uint8),
            meta=meta,
        ),
        coverage,
    )
