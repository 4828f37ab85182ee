"""Reader for the ACDC cine-MRI dataset (Bernard et al., IEEE TMI 2018) in its distributed form.

Accepts the official layout (``database/training``, ``database/testing``) or any part of it, a
plain folder of ``patientNNN`` folders, or a zip of any of these. Zip members are read in
memory (never extracted), so a folder and a zip go through the same code. Everything handed
back is validated; every problem is a :class:`~seglab.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.imageglobals import LoggingOutputSuppressor
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from seglab.data.labels import BACKGROUND, LV, MYO, RV
from seglab.data.source import Node, OpenedSource, one_line, open_source, read_bytes, subdirs
from seglab.errors import DataError

PHASES = ("ED", "ES")
LABELS = {BACKGROUND: "background", RV: "RV", MYO: "MYO", LV: "LV"}
GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
SUBSETS = ("training", "testing")
INFO_KEYS = ("ED", "ES", "Group", "Height", "NbFrame", "Weight")


_PATIENT_DIR = re.compile(r"patient\d{3}")
#: What nibabel raises on a broken NIfTI file (read as one clear error naming the file).
NIFTI_ERRORS = (
    OSError,  # includes gzip.BadGzipFile and nibabel's "Expected N bytes" on truncated data
    EOFError,
    zlib.error,
    ValueError,
    WrapStructError,
    HeaderDataError,
    ImageFileError,
)


# --- ACDC ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcdcInfo:
    """The validated content of a patient's Info.cfg (ED/ES are 1-based frame numbers)."""

    ed: int
    es: int
    group: str
    height: float
    weight: float
    nb_frame: int


@dataclass(frozen=True)
class AcdcPatient:
    """One patient folder: id like ``patient001``, subset ``training``/``testing`` or ``""``."""

    id: str
    subset: str
    info: AcdcInfo


@dataclass(frozen=True)
class AcdcFrame:
    """One annotated frame (ED or ES): the image, its labels and the header geometry."""

    patient: str
    phase: str
    frame: int
    image: np.ndarray  # float32, axes (x, y, z) as stored
    label: np.ndarray  # uint8, (x, y, z), values in 0..3
    spacing: tuple[float, float, float]  # mm, from the header zooms
    affine: np.ndarray  # 4x4 float64
    stored_dtype: str = ""  # the image dtype on disk (float32, int16 or uint8 in ACDC)


class AcdcDataset(OpenedSource[AcdcPatient]):
    """An opened ACDC source (``problems``: patients whose Info.cfg is bad, when opened
    non-strict); use as a context manager so a zip gets closed."""

    def load(self, patient_id: str, phase: str) -> AcdcFrame:
        """Read and validate the image and ground truth of one patient's ED or ES frame."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        info = self.patient(patient_id).info
        frame = info.ed if phase == "ED" else info.es
        folder = self._folders[patient_id]
        stem = f"{patient_id}_frame{frame:02d}"
        image_node = folder / f"{stem}.nii.gz"
        label_node = folder / f"{stem}_gt.nii.gz"
        image_nii, image_raw = _read_nifti(image_node, f"{phase} image (frame {frame})")
        label_nii, label_raw = _read_nifti(label_node, f"{phase} ground truth (frame {frame})")
        image = _image_array(image_raw, image_node)
        label = _label_array(label_raw, label_node)
        if label.shape != image.shape:
            raise DataError(
                str(label_node),
                f"mask shape {label.shape} differs from image shape {image.shape} "
                f"({image_node.name})",
            )
        zooms = image_nii.header.get_zooms()[:3]
        spacing = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            raise DataError(str(image_node), f"invalid voxel spacing {spacing} in the header")
        return AcdcFrame(
            patient=patient_id,
            phase=phase,
            frame=frame,
            image=image,
            label=label,
            spacing=spacing,
            affine=np.asarray(image_nii.affine, dtype=np.float64),
            stored_dtype=str(image_nii.get_data_dtype()),
        )


def open_acdc(path: str | Path, *, strict: bool = True) -> AcdcDataset:
    """Open an ACDC folder or zip and parse every patient's Info.cfg.

    ``strict`` (the default) raises on the first bad Info.cfg; ``strict=False`` leaves such
    patients out and records their errors in ``dataset.problems`` (for ``seglab data check``).
    """
    root = Path(path)
    tree, archive = open_source(root)
    try:
        folders = _patient_folders(root, tree)
        patients: list[AcdcPatient] = []
        problems: list[DataError] = []
        for patient_id, (subset, folder) in sorted(folders.items()):
            try:
                patients.append(AcdcPatient(patient_id, subset, _read_info(folder)))
            except DataError as exc:
                if strict:
                    raise
                problems.append(exc)
    except BaseException:
        if archive is not None:
            archive.close()
        raise
    return AcdcDataset(
        root, patients, {pid: folder for pid, (_, folder) in folders.items()}, problems, archive
    )


def parse_info(text: str, source: str | Path) -> AcdcInfo:
    """Parse an Info.cfg (``Key: value`` lines); ``source`` names the file in errors."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise DataError(source, f"line {number}: expected 'Key: value', got {line.strip()!r}")
        values[key.strip()] = value.strip()
    missing = [key for key in INFO_KEYS if key not in values]
    if missing:
        raise DataError(
            source, f"missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
        )

    def integer(key: str) -> int:
        try:
            return int(values[key])
        except ValueError:
            raise DataError(source, f"{key} {values[key]!r} is not an integer") from None

    def number(key: str) -> float:
        try:
            result = float(values[key])
        except ValueError:
            raise DataError(source, f"{key} {values[key]!r} is not a number") from None
        if not math.isfinite(result):
            raise DataError(source, f"{key} {values[key]!r} is not a finite number")
        return result

    ed, es, nb_frame = integer("ED"), integer("ES"), integer("NbFrame")
    height, weight = number("Height"), number("Weight")
    group = values["Group"]
    if group not in GROUPS:
        raise DataError(source, f"Group {group!r} is not one of {', '.join(GROUPS)}")
    if nb_frame < 1:
        raise DataError(source, f"NbFrame {nb_frame} must be at least 1")
    for key, frame in (("ED", ed), ("ES", es)):
        if not 1 <= frame <= nb_frame:
            raise DataError(source, f"{key} {frame} is outside 1..NbFrame ({nb_frame})")
    return AcdcInfo(ed=ed, es=es, group=group, height=height, weight=weight, nb_frame=nb_frame)


def _descend(tree: Node, found: Callable[[Node], bool], depth: int = 3) -> Node | None:
    """First folder from ``tree`` down through single wrapper folders where ``found`` holds."""
    node = tree
    for _ in range(depth + 1):
        if found(node):
            return node
        dirs = subdirs(node)
        if len(dirs) != 1:
            return None
        node = dirs[0]
    return None


def _patient_folders(root: Path, tree: Node) -> dict[str, tuple[str, Node]]:
    """Map patient id -> (subset, folder), whatever accepted layout the source has."""

    def patients_in(folder: Node) -> list[Node]:
        return [d for d in subdirs(folder) if _PATIENT_DIR.fullmatch(d.name)]

    def layout(node: Node) -> list[tuple[str, Node]]:
        base = node / "database" if (node / "database").is_dir() else node
        parts = [(s, base / s) for s in SUBSETS if (base / s).is_dir()]
        if not parts:
            parts = [(node.name if node.name in SUBSETS else "", node)]
        return [(subset, d) for subset, folder in parts for d in patients_in(folder)]

    top = _descend(tree, lambda node: bool(layout(node)))
    if top is None:
        raise DataError(
            root,
            "not an ACDC dataset: no patientNNN folders (looked for database/training, "
            "database/testing, training, testing and the folder itself)",
        )
    folders: dict[str, tuple[str, Node]] = {}
    for subset, folder in layout(top):
        if folder.name in folders:
            other = folders[folder.name][1]
            raise DataError(str(folder), f"duplicate patient folder (also at {other})")
        folders[folder.name] = (subset, folder)
    return folders


def _read_info(folder: Node) -> AcdcInfo:
    node = folder / "Info.cfg"
    if not node.is_file():
        raise DataError(str(node), "missing Info.cfg")
    try:
        text = read_bytes(node).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(str(node), "not a UTF-8 text file") from None
    return parse_info(text, str(node))


def _read_nifti(node: Node, what: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Decompress and parse a .nii.gz in memory; reading the voxels here detects truncation."""
    if not node.is_file():
        raise DataError(str(node), f"missing {what}")
    data = read_bytes(node)
    try:
        with LoggingOutputSuppressor():
            image = nib.Nifti1Image.from_bytes(gzip.decompress(data))
            array = np.asanyarray(image.dataobj)
    except NIFTI_ERRORS as exc:
        raise DataError(str(node), f"corrupt or truncated NIfTI ({one_line(exc)})") from None
    return image, array


def _image_array(raw: np.ndarray, node: Node) -> np.ndarray:
    if raw.ndim != 3:
        raise DataError(str(node), f"expected a 3D image (x, y, z), got shape {raw.shape}")
    image = raw.astype(np.float32)
    if not np.isfinite(image).all():
        raise DataError(str(node), "image contains NaN or infinite values")
    return image


def _label_array(raw: np.ndarray, node: Node) -> np.ndarray:
    if raw.ndim != 3:
        raise DataError(str(node), f"expected a 3D label map (x, y, z), got shape {raw.shape}")
    values = np.unique(raw)
    fractional = [v for v in values.tolist() if not float(v).is_integer()]
    if fractional:
        raise DataError(
            str(node), f"label values must be integers 0..3, found {_listed(fractional)}"
        )
    outside = [int(v) for v in values.tolist() if v not in LABELS]
    if outside:
        raise DataError(
            str(node),
            f"label values must be in 0..3 (background, RV, MYO, LV), found {_listed(outside)}",
        )
    return raw.astype(np.uint8)


def _listed(values: list[float] | list[int], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")
