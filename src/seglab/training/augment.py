"""Batched, on-device augmentation: per-sample random flips, a small affine and intensity.

Why not torchio per item: a torchio transform runs on the CPU, one sample at a time, in the
DataLoader. On a GPU that loop (Python, per-sample resampling on a few CPU cores) becomes the
bottleneck of a small 2D network; here the whole batch is resampled with one ``affine_grid`` +
``grid_sample`` call on whatever device the batch is on, with independent random parameters per
sample. Flips, rotation, zoom and shift are composed into one affine per sample, so each pixel is
interpolated once: bilinear for images, nearest for label maps (labels stay in their label set).
Pixels that come from outside the image are zero (background). Intensity changes (brightness,
contrast, gamma, noise: nnU-Net's kinds, which MONAI and torchio apply one sample at a time)
touch the image only, each sample with its own draw.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seglab.config import AugmentParams


class BatchAugment(nn.Module):
    """``(image [B, C, H, W], label [B, H, W] or [B, K, H, W]) -> the same, transformed alike``."""

    def __init__(self, params: AugmentParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        if not self.params.enabled:
            return image, label
        theta = self.random_affine(len(image), image.shape[-2:], image.device)
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        out_image = F.grid_sample(
            image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        ).to(image.dtype)
        labels = label.unsqueeze(1) if label.ndim == 3 else label
        out_label = F.grid_sample(
            labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        out_label = out_label.squeeze(1) if label.ndim == 3 else out_label
        return self.intensity(out_image), out_label.round().to(label.dtype)

    def intensity(self, image: Tensor) -> Tensor:
        """Brightness, contrast, gamma and noise, each on a random ``intensity_p`` of the samples.

        Example:
            >>> params = AugmentParams(intensity_p=1.0, gamma=0.5, noise_std=0.0)
            >>> out = BatchAugment(params).intensity(torch.rand(4, 3, 8, 8))
            >>> bool(out.min() >= 0) and bool(out.max() <= 1)  # gamma keeps [0, 1] in [0, 1]
            True
        """
        p = self.params
        if not (p.brightness or p.contrast or p.gamma or p.noise_std):
            return image
        x = image.float()
        shape = (len(x),) + (1,) * (x.ndim - 1)

        def draw(low: float, high: float, identity: float) -> Tensor:
            """Per sample: uniform in [low, high] with probability intensity_p, else identity."""
            value = torch.empty(shape, device=x.device).uniform_(low, high)
            on = torch.rand(shape, device=x.device) < p.intensity_p
            return torch.where(on, value, torch.full_like(value, identity))

        if p.brightness:
            x = x * draw(1 - p.brightness, 1 + p.brightness, 1.0)
        if p.contrast:
            low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * draw(1 - p.contrast, 1 + p.contrast, 1.0) + mean).clamp(low, high)
        if p.gamma:
            low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
            span = (high - low).clamp_min(1e-6)
            log_g = math.log1p(p.gamma)
            x = ((x - low) / span) ** draw(-log_g, log_g, 0.0).exp() * span + low
        if p.noise_std:
            x = x + torch.randn_like(x) * draw(0.0, p.noise_std, 0.0)
        return x.to(image.dtype)

    def random_affine(self, batch: int, size: torch.Size, device: torch.device) -> Tensor:
        """``[B, 2, 3]`` output-to-input maps in ``affine_grid``'s normalised coordinates."""
        p = self.params

        def uniform(low: float, high: float) -> Tensor:
            return torch.empty(batch, device=device).uniform_(low, high)

        angle = uniform(-p.rotate_deg, p.rotate_deg) * (math.pi / 180)
        zoom = uniform(1 - p.scale, 1 + p.scale)
        flips = torch.ones(batch, 2, device=device)
        if p.flip:
            flips = torch.where(torch.rand(batch, 2, device=device) < 0.5, -flips, flips)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # Rotation / zoom in pixel units (x = width, y = height), then the flips of the output.
        matrix = torch.stack(
            [
                torch.stack([cos * flips[:, 0], -sin * flips[:, 1]], dim=1),
                torch.stack([sin * flips[:, 0], cos * flips[:, 1]], dim=1),
            ],
            dim=1,
        )
        # Normalised coordinates stretch each axis to [-1, 1]: rescale the off-diagonal terms
        # so that a rotation stays a rotation on non-square images.
        height, width = int(size[0]), int(size[1])
        matrix[:, 0, 1] *= height / width
        matrix[:, 1, 0] *= width / height
        shift = torch.stack(
            [uniform(-p.translate, p.translate), uniform(-p.translate, p.translate)], dim=1
        )
        return torch.cat([matrix, 2 * shift.unsqueeze(2)], dim=2)
