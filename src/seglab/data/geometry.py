"""A volume's preprocessed slices and the way back onto its own voxels.

:func:`to_slices` preprocesses a label volume (and its image) exactly like the training data
(:func:`~seglab.data.preprocess.frame_to_slices`: intensity rescale, in-plane resampling to
``fov_mm / size``, crop or pad to ``size`` x ``size``), cropping around the label map's own
foreground, so a segmenter's prediction is centred without any ground truth. The returned
:class:`SliceGeometry` knows where the slices lie in the volume's voxel grid:

* :func:`restore` resamples slices (nearest neighbour) back onto that grid;
* :func:`merge` writes the slices a correction changed into the original labels; an
  unchanged slice comes back bit for bit, without the resampling loss.

Internally every grid uses :func:`~seglab.data.preprocess.voxel_affine` (the header zooms), as
the training data did; the caller writes results with the file's own affine and header.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchio as tio

from seglab.config import AcdcPrepareParams
from seglab.data.acdc import AcdcFrame
from seglab.data.preprocess import FrameSlices, frame_to_slices, resample_and_crop, voxel_affine


@dataclass(frozen=True)
class SliceGeometry:
    """Where ``size`` x ``size`` slices (``z`` first) lie in a volume's voxel grid."""

    shape: tuple[int, int, int]  # the volume's voxel grid (x, y, z)
    grid_affine: np.ndarray  # 4x4: that grid from its header zooms (voxel_affine)
    slice_affine: np.ndarray  # 4x4: the slices' [S, S, z] grid in the same space
    size: int
    inside: np.ndarray  # bool (x, y, z): the volume's voxels the slices cover


def to_slices(
    image: np.ndarray,
    label: np.ndarray,
    spacing: tuple[float, float, float],
    params: AcdcPrepareParams,
    centre: tuple[float, float] | None = None,
) -> tuple[FrameSlices, SliceGeometry]:
    """Preprocess an ``(x, y, z)`` image and label map like the training data.

    The crop is centred on ``centre`` (x, y voxels: the heart found by
    :func:`~seglab.data.preprocess.motion_centre` when a segmenter has the ED and ES images),
    else on the bounding box of the label map's foreground, else on the image centre, whatever
    ``params.crop`` says: at inference no ground truth is there to centre on.
    """
    frame = AcdcFrame(
        patient="",
        phase="",
        frame=0,
        image=np.asarray(image, dtype=np.float32),
        label=np.asarray(label, dtype=np.uint8),
        spacing=spacing,
        affine=np.diag([*spacing, 1.0]),
    )
    mode = "motion" if centre is not None else "gt" if frame.label.any() else "center"
    crop = params.model_copy(update={"crop": mode})
    slices = frame_to_slices(frame, crop, centre)
    _, cropped = resample_and_crop(frame, crop, centre)
    grid_affine = voxel_affine(frame)
    slice_affine = np.asarray(cropped["label"].affine, dtype=np.float64)
    shape = (int(label.shape[0]), int(label.shape[1]), int(label.shape[2]))
    ones = np.ones((len(slices.label), params.size, params.size), np.uint8)
    inside = _resample(ones, slice_affine, shape, grid_affine) > 0
    return slices, SliceGeometry(shape, grid_affine, slice_affine, params.size, inside)


def restore(slices: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """uint8 labels on the volume's voxel grid from ``[z, S, S]`` slices (nearest neighbour;
    0 outside the slices' footprint)."""
    expected = (geometry.shape[2], geometry.size, geometry.size)
    if slices.shape != expected:
        raise ValueError(f"slices of shape {slices.shape}, expected {expected}")
    return _resample(slices, geometry.slice_affine, geometry.shape, geometry.grid_affine)


def merge(
    original: np.ndarray, before: np.ndarray, after: np.ndarray, geometry: SliceGeometry
) -> np.ndarray:
    """``original`` (x, y, z) with the slices a correction changed from ``before`` to ``after``.

    A changed slice takes its restored corrected labels inside the footprint; an unchanged
    slice, and everything outside the footprint, keeps the original labels bit for bit.
    (Per voxel, "unchanged" would keep the original's finer detail where the correction
    dropped a structure, leaving a rim of it behind.)
    """
    if original.shape != geometry.shape:
        raise ValueError(f"volume of shape {original.shape}, expected {geometry.shape}")
    if before.shape != after.shape:
        raise ValueError(f"slices before {before.shape} and after {after.shape} differ")
    changed = (before != after).any(axis=(1, 2))
    region = geometry.inside & changed[None, None, :]
    return np.where(region, restore(after, geometry), original).astype(np.uint8)


def _resample(
    slices: np.ndarray,
    slice_affine: np.ndarray,
    shape: tuple[int, int, int],
    grid_affine: np.ndarray,
) -> np.ndarray:
    data = torch.from_numpy(np.ascontiguousarray(np.moveaxis(slices, 0, 2))[None].astype(np.int16))
    subject = tio.Subject(label=tio.LabelMap(tensor=data, affine=slice_affine))
    resampled = tio.Resample((shape, grid_affine))(subject)
    return resampled["label"].data[0].numpy().astype(np.uint8)
