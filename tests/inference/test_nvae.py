"""A trained NVAE at inference: posterior-mean reconstructions, seeded samples, the current slice
of stacked inputs, and the caller's network left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import tiny_nvae

from seglab.data.acdcseg import onehot
from seglab.data.phantom.masks import heart_masks
from seglab.inference.nvae import generate, input_labels, reconstruct
from seglab.models.nvae import Nvae

SIZE = 32


def hearts(n: int, seed: int = 0) -> np.ndarray:
    return heart_masks(n, SIZE, seed)


def tiny() -> Nvae:
    torch.manual_seed(0)
    return Nvae(**tiny_nvae().network(), image_size=SIZE)


def test_reconstruct_is_the_posterior_mean() -> None:
    x = onehot(hearts(5))
    model = tiny().eval()
    labels = reconstruct(model, x, batch_size=2)
    assert labels.shape == (5, SIZE, SIZE) and labels.dtype == np.uint8
    expected = model(x, sample=False).logits.argmax(1).numpy()
    np.testing.assert_array_equal(labels, expected)
    # the CPU's default batch (8) and channels-last weights give the same maps
    model.to(memory_format=torch.channels_last)
    np.testing.assert_array_equal(reconstruct(model, x), expected)


def test_generate_is_seeded_and_leaves_the_global_rng() -> None:
    model = tiny()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = generate(model, 5, seed=1, batch_size=2)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert a.shape == (5, SIZE, SIZE) and a.dtype == np.uint8
    assert np.array_equal(a, generate(model, 5, seed=1, batch_size=2))
    assert not np.array_equal(a, generate(model, 5, seed=2, batch_size=2))


def test_input_labels_takes_the_current_slice_of_a_trigram() -> None:
    prev, cur, nxt = hearts(2, seed=1), hearts(2, seed=2), hearts(2, seed=3)
    trigram = torch.cat([onehot(prev), onehot(cur), onehot(nxt)], dim=1)
    np.testing.assert_array_equal(input_labels(trigram), cur)
    np.testing.assert_array_equal(input_labels(onehot(cur)), cur)
    with pytest.raises(ValueError, match="4k"):
        input_labels(torch.zeros(1, 5, SIZE, SIZE))


def test_the_network_comes_back_in_its_mode_on_its_device() -> None:
    model = tiny().train()
    reconstruct(model, onehot(hearts(2)), device="cpu")
    generate(model, 2, device="cpu")
    assert model.training
    assert next(model.parameters()).device.type == "cpu"
    model.eval()
    reconstruct(model, onehot(hearts(2)))
    assert not model.training
    assert reconstruct(model, onehot(hearts(0))).shape == (0, SIZE, SIZE)
    assert generate(model, 0).shape == (0, SIZE, SIZE)
