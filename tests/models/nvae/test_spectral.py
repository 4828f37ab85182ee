"""Spectral regulariser: power iteration converges, its vectors persist and it has gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seglab.models.nvae import SpectralRegularizer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3), nn.SiLU(), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 5, groups=8)
    )


def _exact(net: nn.Module) -> float:
    return sum(
        torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2).item()
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    )


def test_power_iteration_converges_over_steps() -> None:
    net = _net()
    reg = SpectralRegularizer(net)
    first = reg(net).item()
    for _ in range(100):
        estimate = reg(net).item()
    exact = _exact(net)
    assert first < exact  # one iteration from random vectors underestimates
    assert estimate == pytest.approx(exact, rel=1e-4)


def test_vectors_persist_in_the_state_dict() -> None:
    net = _net()
    reg = SpectralRegularizer(net)
    for _ in range(100):
        reg(net)
    state = reg.state_dict()
    assert sorted(state) == ["u0", "u1", "u2", "v0", "v1", "v2"]
    assert state["u0"].shape == (8,) and state["v0"].shape == (36,)
    fresh = SpectralRegularizer(net)
    cold = fresh(net).item()
    fresh.load_state_dict(state)
    # restored vectors start where the trained ones were: accurate from the first call
    assert fresh(net).item() == pytest.approx(_exact(net), rel=1e-4)
    assert cold < _exact(net) * (1 - 1e-3)


def test_regulariser_has_gradients_for_every_conv() -> None:
    net = _net()
    SpectralRegularizer(net)(net).backward()
    assert all(p.grad is not None for p in net.parameters() if p.dim() == 4)
