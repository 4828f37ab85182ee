"""ACDC frame -> 2D slices at a fixed size and known spacing (torchio transforms).

Order matters: intensities are rescaled on the native volume (so padding never shifts the
percentiles), the volume is resampled in-plane to ``fov_mm / size`` mm (slice thickness kept),
then cropped or padded to ``size`` x ``size`` around the heart centre. Every slice therefore
has the same pixel spacing, which the mm-based metrics need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchio as tio
from scipy import ndimage

from seglab.config import AcdcPrepareParams
from seglab.data.acdc import AcdcFrame
from seglab.data.labels import NUM_LABELS


@dataclass(frozen=True)
class FrameSlices:
    """One frame's slices, ``z`` first."""

    image: np.ndarray  # float32 [z, S, S] in [0, 1]
    label: np.ndarray  # uint8 [z, S, S] in 0..3
    spacing: tuple[float, float]  # mm per pixel after resampling
    thickness: float  # slice spacing in mm, from the header
    coverage: float  # share of ground-truth foreground inside the crop (reporting only)


def motion_centre(ed: AcdcFrame, es: AcdcFrame, sigma_mm: float = 8.0) -> tuple[float, float]:
    """Heart centre (x, y in voxels) from where the image changes between ED and ES.

    In a breath-hold cine the heart is what moves: the smoothed |ED - ES| difference peaks on
    the ventricles. No ground truth is used, so the same crop is possible at inference.
    """
    if ed.image.shape != es.image.shape:
        return _image_centre(ed)
    diff = np.abs(_unit(ed.image) - _unit(es.image)).sum(axis=2)
    sigma = (sigma_mm / ed.spacing[0], sigma_mm / ed.spacing[1])
    smooth = ndimage.gaussian_filter(diff, sigma)
    # Mild prior towards the image centre: scanners are planned with the heart near it.
    nx, ny = smooth.shape
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    prior = np.exp(-(((gx - nx / 2) / (0.5 * nx)) ** 2 + ((gy - ny / 2) / (0.5 * ny)) ** 2))
    score = smooth * prior
    top = score >= np.quantile(score, 0.995)
    cx, cy = ndimage.center_of_mass(top)
    return float(cx), float(cy)


def frame_to_slices(
    frame: AcdcFrame, params: AcdcPrepareParams, centre: tuple[float, float] | None = None
) -> FrameSlices:
    """Preprocess one frame; ``centre`` (x, y voxels) is used when ``params.crop`` is ``motion``."""
    resampled, cropped = resample_and_crop(frame, params, centre)
    fg_total = int((resampled["label"].data > 0).sum())
    fg_kept = int((cropped["label"].data > 0).sum())
    image = cropped["image"].data[0].numpy().astype(np.float32)
    label = cropped["label"].data[0].numpy().astype(np.uint8)
    spacing = params.fov_mm / params.size
    return FrameSlices(
        image=np.ascontiguousarray(np.moveaxis(image, 2, 0)),
        label=np.ascontiguousarray(np.moveaxis(label, 2, 0)),
        spacing=(spacing, spacing),
        thickness=float(frame.spacing[2]),
        coverage=fg_kept / fg_total if fg_total else 1.0,
    )


def resample_and_crop(
    frame: AcdcFrame, params: AcdcPrepareParams, centre: tuple[float, float] | None = None
) -> tuple[tio.Subject, tio.Subject]:
    """The frame as torchio subjects after rescaling and resampling, and after the crop.

    The cropped subject's affine places its slices in the frame's :func:`voxel_affine` space,
    which is what maps slices (corrected ones, say) back onto the frame's own voxels.
    """
    spacing = params.fov_mm / params.size
    affine = voxel_affine(frame)
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=torch.from_numpy(frame.image[None]), affine=affine),
        label=tio.LabelMap(
            tensor=torch.from_numpy(frame.label[None].astype(np.int16)), affine=affine
        ),
    )
    mask_name: str | None = None
    if params.crop == "gt":
        mask_name = "label"
    elif params.crop == "motion":
        subject.add_image(_centre_map(frame, centre or _image_centre(frame)), "centre")
        mask_name = "centre"
    nz = frame.image.shape[2]
    rescale = tio.RescaleIntensity(out_min_max=(0.0, 1.0), percentiles=params.percentiles)
    resample = tio.Resample((spacing, spacing, frame.spacing[2]))
    resampled = resample(rescale(subject))
    cropped = tio.CropOrPad((params.size, params.size, nz), mask_name=mask_name)(resampled)
    return resampled, cropped


def one_hot(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[N, H, W] labels -> [N, 4, H, W] float one-hot (channel 0 background, 1 RV, 2 MYO, 3 LV)."""
    tensor = torch.as_tensor(labels).long()
    return torch.nn.functional.one_hot(tensor, NUM_LABELS).permute(0, 3, 1, 2).float()


def voxel_affine(frame: AcdcFrame) -> np.ndarray:
    """Axis-aligned affine with the header's zooms.

    ACDC headers carry the true spacing in their zooms but an sform whose diagonal is 1 mm;
    torchio takes spacing from the affine, so it is rebuilt from the zooms. Orientation is
    irrelevant here: slices keep the stored array axes.
    """
    return np.diag([*frame.spacing, 1.0])


def _unit(volume: np.ndarray) -> np.ndarray:
    scale = float(np.percentile(volume, 99)) or 1.0
    return np.clip(volume / scale, 0.0, 1.0)


def _image_centre(frame: AcdcFrame) -> tuple[float, float]:
    return (frame.image.shape[0] - 1) / 2, (frame.image.shape[1] - 1) / 2


def _centre_map(
    frame: AcdcFrame, centre: tuple[float, float], radius_mm: float = 6.0
) -> tio.LabelMap:
    """A small disc through all slices at ``centre``: CropOrPad centres on its bounding box."""
    nx, ny, nz = frame.image.shape
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    dist2 = ((gx - centre[0]) * frame.spacing[0]) ** 2 + ((gy - centre[1]) * frame.spacing[1]) ** 2
    disc = (dist2 <= radius_mm**2).astype(np.int16)
    data = np.repeat(disc[:, :, None], nz, axis=2)[None]
    return tio.LabelMap(tensor=torch.from_numpy(data), affine=voxel_affine(frame))
