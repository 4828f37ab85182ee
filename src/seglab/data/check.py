"""`seglab data check`: identify a raw dataset, read every file of it, and summarise.

Every frame and slice is loaded through the same readers training uses, so a dataset that
passes here will not fail later on a bad file. Problems are collected, not raised, so one
run lists all of them.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from seglab.data.acdc import PHASES, AcdcDataset, open_acdc
from seglab.data.lgg import LggDataset, case_key, open_lgg
from seglab.errors import DataError


@dataclass
class DataReport:
    """Outcome of a check: what the path holds, whether every file is valid, and figures."""

    path: str
    kind: str  # "acdc" | "lgg" | "unknown"
    ok: bool
    problems: list[str] = field(default_factory=list)  # each "PATH: problem"
    summary: dict[str, Any] = field(default_factory=dict)
    table: list[dict[str, Any]] = field(default_factory=list)  # one row per patient

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``--json``), with the per-patient table."""
        return {
            "path": self.path,
            "kind": self.kind,
            "ok": self.ok,
            "problems": list(self.problems),
            "summary": dict(self.summary),
            "patients": list(self.table),
        }

    def render(self) -> str:
        """A short human-readable summary, then every problem on its own line."""
        name = {"acdc": "ACDC", "lgg": "LGG"}.get(self.kind, "unknown")
        status = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines = [f"{name} dataset at {self.path}: {status}"]
        width = max((len(key) for key in self.summary), default=0)
        lines += [
            f"  {key.replace('_', ' '):<{width}}  {_show(v)}" for key, v in self.summary.items()
        ]
        if self.problems:
            lines.append("problems:")
            lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def check_path(path: Path) -> DataReport:
    """Identify ``path`` as ACDC or LGG and validate every file; never raises DataError."""
    try:
        dataset = open_acdc(path, strict=False)
    except DataError as acdc_error:
        try:
            dataset = open_lgg(path, strict=False)
        except DataError as lgg_error:
            return DataReport(str(path), "unknown", False, [_neither(path, acdc_error, lgg_error)])
        with dataset:
            return _check_lgg(path, dataset)
    with dataset:
        return _check_acdc(path, dataset)


def _neither(path: Path, acdc_error: DataError, lgg_error: DataError) -> str:
    if str(acdc_error) == str(lgg_error):  # e.g. missing path, empty folder, broken zip
        return str(acdc_error)
    return str(
        DataError(path, f"neither ACDC ({acdc_error.problem}) nor LGG ({lgg_error.problem})")
    )


def _check_acdc(path: Path, dataset: AcdcDataset) -> DataReport:
    problems = [str(exc) for exc in dataset.problems]
    rows: list[dict[str, Any]] = []
    labels: set[int] = set()
    frames_ok = 0
    with _progress(len(dataset.patients) * len(PHASES), "ACDC", "frame") as bar:
        for patient in dataset.patients:
            info = patient.info
            row: dict[str, Any] = {
                "id": patient.id,
                "subset": patient.subset,
                "group": info.group,
                "ed": info.ed,
                "es": info.es,
                "nb_frame": info.nb_frame,
            }
            for phase in PHASES:
                bar.update()
                try:
                    frame = dataset.load(patient.id, phase)
                except DataError as exc:
                    problems.append(str(exc))
                    continue
                frames_ok += 1
                labels.update(np.unique(frame.label).tolist())
                row.setdefault("shape", list(frame.image.shape))
                row.setdefault("spacing", [round(s, 4) for s in frame.spacing])
                row.setdefault("dtype", frame.stored_dtype)
            rows.append(row)
    loaded = [row for row in rows if "shape" in row]
    summary: dict[str, Any] = {
        "patients": len(dataset.patients) + len(dataset.problems),
        "frames": len(PHASES) * len(dataset.patients),
        "frames_ok": frames_ok,
        "subsets": _counts(r["subset"] or "(plain folder)" for r in rows),
        "groups": _counts(r["group"] for r in rows),
        "ed_frames": _counts(r["ed"] for r in rows),
        "ed_not_frame_1": [f"{r['id']} (ED {r['ed']})" for r in rows if r["ed"] != 1],
        "es_frames": _range(r["es"] for r in rows),
        "nb_frames": _range(r["nb_frame"] for r in rows),
        "shape_x": _range(r["shape"][0] for r in loaded),
        "shape_y": _range(r["shape"][1] for r in loaded),
        "slices": _range(r["shape"][2] for r in loaded),
        "in_plane_spacing_mm": _range(s for r in loaded for s in r["spacing"][:2]),
        "slice_spacing_mm": sorted({r["spacing"][2] for r in loaded}),
        "label_values": sorted(int(v) for v in labels),
        "image_dtypes": sorted({r["dtype"] for r in loaded}),
    }
    return DataReport(str(path), "acdc", not problems, sorted(problems), summary, rows)


def _check_lgg(path: Path, dataset: LggDataset) -> DataReport:
    problems = [str(exc) for exc in dataset.problems]
    rows: list[dict[str, Any]] = []
    shapes: set[str] = set()
    mask_values: set[int] = set()
    tumour_total = 0
    total = sum(len(p.slice_numbers) for p in dataset.patients)
    with _progress(total, "LGG", "slice") as bar:
        for patient in dataset.patients:
            try:
                volume = dataset.load(patient.id)
            except DataError:
                # Re-read slice by slice so that every bad file of this case gets listed.
                problems += _slice_problems(dataset, patient.id, patient.slice_numbers)
                bar.update(len(patient.slice_numbers))
                continue
            bar.update(len(patient.slice_numbers))
            tumour = int(volume.mask.any(axis=(1, 2)).sum())
            tumour_total += tumour
            mask_values.update(np.unique(volume.mask).tolist())
            shapes.add("x".join(str(n) for n in volume.image.shape[1:]))
            numbers = patient.slice_numbers
            rows.append(
                {
                    "id": patient.id,
                    "slices": len(numbers),
                    "tumour_slices": tumour,
                    "slice_numbers": f"{numbers[0]}..{numbers[-1]}",
                }
            )
    csv_keys = set(dataset.table["Patient"]) if "Patient" in dataset.table else set()
    summary: dict[str, Any] = {
        "patients": len(dataset.patients)
        + sum(not exc.path.endswith("data.csv") for exc in dataset.problems),
        "slices": total,
        "slices_with_tumour": tumour_total,
        "slices_empty_mask": sum(r["slices"] for r in rows) - tumour_total,
        "image_shapes": sorted(shapes),
        "mask_values": sorted(255 * v for v in mask_values),
        "data_csv_rows": len(dataset.table),
        "data_csv_rows_without_case": list(dataset.csv_unmatched),
        "without_data_csv_row": [p.id for p in dataset.patients if case_key(p.id) not in csv_keys],
    }
    return DataReport(str(path), "lgg", not problems, sorted(problems), summary, rows)


def _slice_problems(dataset: LggDataset, patient_id: str, numbers: Iterable[int]) -> list[str]:
    problems: list[str] = []
    for number in numbers:
        try:
            dataset.load_slice(patient_id, number)
        except DataError as exc:
            problems.append(str(exc))
    if not problems:  # every slice is valid alone, so the volume failed on mixed shapes
        try:
            dataset.load(patient_id)
        except DataError as exc:
            problems.append(str(exc))
    return problems


def _progress(total: int, name: str, unit: str) -> tqdm:
    """Progress on stderr, shown only on a terminal (stdout stays clean for --json)."""
    return tqdm(total=total, desc=f"checking {name}", unit=unit, file=sys.stderr, disable=None)


def _counts(values: Iterable[Any]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(values).items())}


def _range(values: Iterable[float]) -> dict[str, float] | None:
    items = list(values)
    return {"min": min(items), "max": max(items)} if items else None


def _show(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"min", "max"}:
        low, high = value["min"], value["max"]
        return str(low) if low == high else f"{low}..{high}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return "-" if value is None else str(value)
