"""Batched on-device augmentation: labels stay labels, image and label move together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from seglab.config import AugmentParams
from seglab.training.augment import BatchAugment

STRONG = AugmentParams(rotate_deg=30.0, scale=0.2, translate=0.1)


def _masks(batch: int, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Label maps with three nested blobs (0 background, 1..3 inside), off-centre."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    out = np.zeros((batch, height, width), dtype=np.uint8)
    for b in range(batch):
        cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
        r = ((yy - cy) / (0.3 * height)) ** 2 + ((xx - cx) / (0.2 * width)) ** 2
        out[b][r < 1.0] = 1
        out[b][r < 0.5] = 2
        out[b][(r < 0.2) & (xx > cx)] = 3
    return torch.from_numpy(out)


def test_labels_stay_in_the_label_set_and_keep_their_dtype() -> None:
    torch.manual_seed(0)
    labels = _masks(8)
    image = torch.rand(8, 1, 64, 64)
    out_image, out_label = BatchAugment(STRONG)(image, labels)
    assert out_label.dtype == torch.uint8 and out_label.shape == labels.shape
    assert set(out_label.unique().tolist()) <= {0, 1, 2, 3}
    assert out_image.shape == image.shape and out_image.dtype == image.dtype
    assert not torch.equal(out_label, labels)  # something moved


def test_image_and_label_stay_aligned() -> None:
    """An image equal to its label map, augmented with it, still equals it off the borders."""
    torch.manual_seed(1)
    labels = _masks(16, seed=1)
    image = labels.float().unsqueeze(1)
    out_image, out_label = BatchAugment(STRONG)(image, labels)
    mismatch = (out_image[:, 0] - out_label.float()).abs() > 0.5
    # Bilinear and nearest only disagree next to a change of label.
    edges = out_label.numpy()
    border = np.zeros_like(edges, dtype=bool)
    for b in range(len(edges)):
        grad = ndimage.maximum_filter(edges[b], 3) != ndimage.minimum_filter(edges[b], 3)
        border[b] = ndimage.binary_dilation(grad)
    assert not (mismatch.numpy() & ~border).any()
    assert mismatch.float().mean() < 0.02


def test_each_sample_gets_its_own_transform() -> None:
    torch.manual_seed(2)
    labels = _masks(1).repeat(6, 1, 1)
    _, out = BatchAugment(STRONG)(labels.float().unsqueeze(1), labels)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 6


def test_flips_alone_are_exact_mirror_images() -> None:
    torch.manual_seed(3)
    params = AugmentParams(rotate_deg=0.0, scale=0.0, translate=0.0, flip=True)
    image = torch.rand(32, 2, 16, 24)
    labels = _masks(32, 16, 24)
    out_image, out_label = BatchAugment(params)(image, labels)
    seen = set()
    for b in range(32):
        for dims in ((), (-1,), (-2,), (-2, -1)):
            flipped = image[b].flip(dims) if dims else image[b]
            if torch.allclose(out_image[b], flipped, atol=1e-5):
                lab = labels[b].flip(dims) if dims else labels[b]
                assert torch.equal(out_label[b], lab)
                seen.add(dims)
                break
        else:
            pytest.fail(f"sample {b} is not a flip of its input")
    assert len(seen) == 4  # all four combinations occur in 32 draws


def test_everything_off_is_the_identity_and_disabled_is_a_no_op() -> None:
    image = torch.rand(4, 1, 20, 20)
    labels = _masks(4, 20, 20)
    still = AugmentParams(rotate_deg=0.0, scale=0.0, translate=0.0, flip=False)
    out_image, out_label = BatchAugment(still)(image, labels)
    assert torch.allclose(out_image, image, atol=1e-5)
    assert torch.equal(out_label, labels)
    off = BatchAugment(AugmentParams(enabled=False))
    same_image, same_label = off(image, labels)
    assert same_image is image and same_label is labels


def test_rotation_stays_a_rotation_on_non_square_images() -> None:
    """Back in pixel units, each affine is a rotation times 1/zoom (and flips): M^T M = s^-2 I."""
    torch.manual_seed(4)
    height, width = 48, 96
    theta = BatchAugment(STRONG).random_affine(64, torch.Size([height, width]), torch.device("cpu"))
    to_pixels = torch.diag(torch.tensor([width / 2, height / 2]))
    from_pixels = torch.diag(torch.tensor([2 / width, 2 / height]))
    m = to_pixels @ theta[:, :, :2] @ from_pixels
    gram = m.transpose(1, 2) @ m
    diag = gram.diagonal(dim1=1, dim2=2)
    assert torch.allclose(gram[:, 0, 1], torch.zeros(64), atol=1e-5)
    assert torch.allclose(diag[:, 0], diag[:, 1], atol=1e-5)
    zoom = diag[:, 0].rsqrt()
    assert (zoom >= 0.8 - 1e-5).all() and (zoom <= 1.2 + 1e-5).all()
    shift = theta[:, :, 2] / 2
    assert (shift.abs() <= 0.1 + 1e-6).all()


def test_multichannel_labels_are_resampled_alike() -> None:
    torch.manual_seed(5)
    labels = _masks(4)
    onehot = torch.nn.functional.one_hot(labels.long(), 4).permute(0, 3, 1, 2).float()
    out_image, out_onehot = BatchAugment(STRONG)(labels.float().unsqueeze(1), onehot)
    assert out_onehot.shape == onehot.shape
    assert set(out_onehot.unique().tolist()) <= {0.0, 1.0}


INTENSITY = AugmentParams(
    rotate_deg=0.0,
    scale=0.0,
    translate=0.0,
    flip=False,
    intensity_p=1.0,
    brightness=0.25,
    contrast=0.25,
    gamma=0.5,
    noise_std=0.05,
)


def test_intensity_changes_the_image_per_sample_and_never_the_labels() -> None:
    torch.manual_seed(6)
    labels = _masks(6)
    image = torch.rand(1, 3, 64, 64).repeat(6, 1, 1, 1)
    out_image, out_label = BatchAugment(INTENSITY)(image, labels)
    assert torch.equal(out_label, labels)
    assert out_image.dtype == image.dtype and out_image.shape == image.shape
    assert len({round(float(o.mean()), 4) for o in out_image}) == 6  # one draw per sample


def test_intensity_is_monotone_per_sample_without_noise() -> None:
    """Brightness, contrast and gamma keep the order of intensities (they are monotone maps)."""
    torch.manual_seed(7)
    params = INTENSITY.model_copy(update={"noise_std": 0.0})
    image = torch.rand(8, 1, 16, 16)
    out = BatchAugment(params).intensity(image)
    for b in range(8):
        order = image[b].flatten().argsort()
        assert (out[b].flatten()[order].diff() >= -1e-6).all()


def test_intensity_probability_zero_is_the_identity() -> None:
    image = torch.rand(4, 2, 16, 16)
    params = INTENSITY.model_copy(update={"intensity_p": 0.0})
    assert torch.allclose(BatchAugment(params).intensity(image), image, atol=1e-6)
