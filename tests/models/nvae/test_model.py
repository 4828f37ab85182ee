"""Shapes, scale order, size rules, zero-KL groups, reconstruction and sampling of the NVAE."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from seglab.errors import ConfigError
from seglab.models.nvae import Nvae


def _masks(n: int, size: int, channels: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n, channels // 4, size, size), generator=g)
    return F.one_hot(labels, 4).permute(0, 1, 4, 2, 3).reshape(n, channels, size, size).float()


def _is_one_hot(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all() and torch.equal(x.sum(1), torch.ones_like(x[:, 0])))


@pytest.mark.parametrize("in_channels", [4, 12])
def test_default_model_shapes_at_128(in_channels: int) -> None:
    model = Nvae(in_channels=in_channels, image_size=128)
    out = model(_masks(2, 128, in_channels))
    assert out.logits.shape == (2, 4, 128, 128)
    # decoder order: 1 group at 4x4, 2 at 8x8, 4 at 16x16; scale 0 is the finest
    assert out.group_scales == (2, 1, 1, 0, 0, 0, 0)
    sides = {0: 16, 1: 8, 2: 4}
    for kl, scale in zip(out.kl, out.group_scales, strict=True):
        assert kl.shape == (2, 20, sides[scale], sides[scale])
    assert out.kl_per_group().shape == (7, 2)
    assert torch.all(out.kl_per_group() >= 0)


@pytest.mark.parametrize(("size", "top"), [(64, 2), (96, 3), (72, 3)])
def test_other_sizes(size: int, top: int) -> None:
    model = Nvae(in_channels=12, groups_per_scale=(1, 1, 1), latent_channels=4, image_size=size)
    out = model(_masks(2, size, 12))
    assert out.logits.shape == (2, 4, size, size)
    assert model.top_map.shape[-2:] == (top, top)
    assert out.kl[0].shape[-1] == top


def test_sizes_that_do_not_fit_are_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="image size 16 is too small"):
        Nvae(image_size=16)
    with pytest.raises(ConfigError, match="groups_per_scale"):
        Nvae(groups_per_scale=(2, 0), image_size=64)
    model = Nvae(groups_per_scale=(1, 1, 1), image_size=64)
    with pytest.raises(ConfigError, match=r"takes \[B, 4, 64, 64\]"):
        model(_masks(1, 128))
    with pytest.raises(ConfigError, match="in_channels"):
        model(_masks(1, 64, 12))


def _small(seed: int = 0) -> Nvae:
    torch.manual_seed(seed)
    return Nvae(preprocess_blocks=1, groups_per_scale=(2, 1), latent_channels=4, image_size=32)


def test_a_group_with_zero_residual_has_zero_kl() -> None:
    model = _small()
    for group in model.decoder[1:]:
        conv = group.posterior[-1]
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    out = model(_masks(3, 32))
    assert out.kl[0].sum() > 0  # the top group is compared with N(0, I)
    for kl in out.kl[1:]:
        assert torch.equal(kl, torch.zeros_like(kl))


def test_reconstruct_is_deterministic_one_hot() -> None:
    model = _small().eval()
    x = _masks(3, 32)
    a, b = model.reconstruct(x), model.reconstruct(x)
    assert a.shape == (3, 4, 32, 32) and _is_one_hot(a)
    assert torch.equal(a, b)
    torch.manual_seed(1)
    s1 = model(x).logits
    torch.manual_seed(2)
    assert not torch.equal(s1, model(x).logits)  # sampling path really samples


def test_sample_from_prior_gives_valid_masks() -> None:
    model = _small().eval()
    masks = model.sample(5)
    assert masks.shape == (5, 4, 32, 32) and _is_one_hot(masks)
    cold = model.sample(2, temperature=0.0)
    assert torch.equal(cold, model.sample(2, temperature=0.0))


def test_gradients_reach_every_parameter() -> None:
    model = _small()
    out = model(_masks(2, 32))
    (out.logits.square().mean() + out.kl_per_group().sum()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
