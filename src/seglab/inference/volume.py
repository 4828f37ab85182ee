"""NIfTI volumes in and out of inference: read a label map or an image with one clear error per
bad file (naming it), and write labels back in an input's own geometry, atomically.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from seglab.data.acdc import LABELS, NIFTI_ERRORS
from seglab.errors import DataError
from seglab.io import atomic_file

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_volume(path: Path, what: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A NIfTI volume as ``(image, voxels)``; 4D with one time point counts as 3D."""
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    try:
        nii = nib.load(path)
        data = np.asanyarray(nii.dataobj)  # reading the voxels detects truncation
    except NIFTI_ERRORS as exc:
        reason = " ".join(str(exc).split())
        raise DataError(path, f"not a readable NIfTI {what} ({reason})") from None
    if not isinstance(nii, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(path, f"not a NIfTI {what} ({type(nii).__name__})")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D {what} (x, y, z), got shape {data.shape}")
    return nii, data


def read_labels(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """An ACDC label volume (0 background, 1 RV, 2 MYO, 3 LV) as uint8; other values refused."""
    nii, data = read_volume(path, "label volume")
    values = np.unique(data).tolist()
    whole = [v for v in values if math.isfinite(v) and float(v).is_integer()]
    bad = [v for v in values if v not in whole] + [v for v in whole if int(v) not in LABELS]
    if bad:
        shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise DataError(path, f"label values must be 0..3 (background, RV, MYO, LV), found {shown}")
    return nii, data.astype(np.uint8)


def read_image(
    path: Path, like: tuple[Path, tuple[int, ...]] | None = None
) -> tuple[nib.Nifti1Image, np.ndarray]:
    """An MR image volume as float32; ``like`` (a label volume's path and shape) is the shape it
    must have."""
    nii, data = read_volume(path, "image")
    if like is not None and data.shape != like[1]:
        raise DataError(
            path, f"image shape {data.shape} differs from the label volume's {like[1]} ({like[0]})"
        )
    volume = data.astype(np.float32)
    if not np.isfinite(volume).all():
        raise DataError(path, "image contains NaN or infinite values")
    return nii, volume


def spacing_of(nii: nib.Nifti1Image, path: Path) -> tuple[float, float, float]:
    """The voxel spacing (mm) in the header; a zero, negative or missing zoom is refused."""
    zooms = tuple(float(z) for z in nii.header.get_zooms()[:3])
    if len(zooms) != 3 or not all(math.isfinite(z) and z > 0 for z in zooms):
        raise DataError(path, f"invalid voxel spacing {zooms} in the header")
    return zooms[0], zooms[1], zooms[2]


def write_like(
    out: Path, like: nib.Nifti1Image, labels: np.ndarray, dtype: type | None = None
) -> None:
    """``labels`` in ``like``'s shape, affine and header, written atomically; in ``like``'s data
    type, or ``dtype`` (labels written beside an image: uint8)."""
    header = like.header.copy()
    if dtype is not None:
        header.set_data_dtype(dtype)
        header.set_slope_inter(1.0, 0.0)
    data = labels.reshape(like.shape).astype(header.get_data_dtype())
    result = type(like)(data, like.affine, header)
    payload = result.to_bytes()
    with atomic_file(out) as tmp:
        tmp.write_bytes(gzip.compress(payload, 6) if out.name.endswith(".gz") else payload)
