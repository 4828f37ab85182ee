"""Soft clamping, the residual posterior and the closed-form Gaussian KL."""

from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from seglab.models.nvae.distributions import SIGMA_FLOOR, Gaussian, soft_clamp


def _raw(seed: int, shape: tuple[int, ...] = (3, 8, 4, 4)) -> torch.Tensor:
    return 3.0 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_soft_clamp_bounds_and_near_identity() -> None:
    x = torch.tensor([-1e4, -50.0, -0.01, 0.0, 0.01, 50.0, 1e4])
    y = soft_clamp(x)
    assert torch.all(y.abs() <= 5.0) and torch.all(y.diff() >= 0)
    assert torch.allclose(y[2:5], x[2:5], atol=1e-6)


def test_from_raw_clamps_mean_and_floors_sigma() -> None:
    raw = torch.cat([torch.full((1, 2, 1, 1), 100.0), torch.full((1, 2, 1, 1), -100.0)], dim=1)
    g = Gaussian.from_raw(raw)
    assert g.mu.shape == (1, 2, 1, 1)
    assert torch.all(g.mu <= 5.0) and torch.all(g.mu > 4.9)
    assert torch.allclose(
        g.sigma, torch.full_like(g.sigma, SIGMA_FLOOR + torch.exp(torch.tensor(-5.0)))
    )


def test_kl_of_a_distribution_with_itself_is_exactly_zero() -> None:
    p = Gaussian.from_raw(_raw(0))
    assert torch.equal(p.kl(p), torch.zeros_like(p.mu))


def test_zero_residual_gives_the_prior_and_zero_kl() -> None:
    p = Gaussian.from_raw(_raw(1))
    q = p.residual(torch.zeros(3, 8, 4, 4))
    assert torch.equal(q.mu, p.mu) and torch.equal(q.sigma, p.sigma)
    assert torch.equal(q.kl(p), torch.zeros_like(p.mu))


def test_kl_matches_torch_distributions() -> None:
    p = Gaussian.from_raw(_raw(2))
    q = p.residual(_raw(3))
    expected = kl_divergence(Normal(q.mu, q.sigma), Normal(p.mu, p.sigma))
    assert torch.allclose(q.kl(p), expected, rtol=1e-4, atol=1e-5)
    assert torch.all(q.kl(p) >= 0)


def test_residual_posterior_is_relative_to_the_prior() -> None:
    p = Gaussian.from_raw(_raw(4))
    delta = torch.cat([torch.full((3, 4, 4, 4), 0.5), torch.full((3, 4, 4, 4), 0.2)], dim=1)
    q = p.residual(delta)
    assert torch.allclose(q.mu - p.mu, soft_clamp(torch.tensor(0.5)).expand_as(p.mu))
    assert torch.allclose(
        q.sigma / p.sigma, torch.exp(soft_clamp(torch.tensor(0.2))).expand_as(p.mu)
    )


def test_standard_and_sample_temperature() -> None:
    g = Gaussian.standard((2, 3, 4, 4), torch.device("cpu"))
    assert torch.equal(g.mu, torch.zeros(2, 3, 4, 4)) and torch.equal(
        g.sigma, torch.ones(2, 3, 4, 4)
    )
    assert torch.equal(g.sample(temperature=0.0), g.mu)
    torch.manual_seed(0)
    draws = Gaussian.standard((20000,), torch.device("cpu")).sample(temperature=0.5)
    assert abs(draws.std().item() - 0.5) < 0.02
