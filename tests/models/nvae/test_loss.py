"""The objective: warm-up schedule, KL balancing, beta per scale, divergence detection."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from seglab.errors import SeglabError
from seglab.models.nvae import (
    KLDivergenceError,
    NvaeOutput,
    balance_weights,
    kl_coefficient,
    nvae_loss,
)


def test_kl_coefficient_schedule() -> None:
    assert kl_coefficient(0, 100, 1e-4) == pytest.approx(1e-4)
    assert kl_coefficient(50, 100, 1e-4) == pytest.approx((1 + 1e-4) / 2)
    assert kl_coefficient(25, 100, 0.0) == pytest.approx(0.25)
    assert kl_coefficient(100, 100, 1e-4) == 1.0
    assert kl_coefficient(10_000, 100, 1e-4) == 1.0
    assert kl_coefficient(0, 0, 1e-4) == 1.0  # no warm-up
    values = [kl_coefficient(s, 6420, 1e-4) for s in range(0, 7000, 100)]
    assert values == sorted(values)


def test_balance_weights_mean_one_detached_and_proportional() -> None:
    kl = torch.tensor([[1.0, 3.0], [10.0, 30.0], [0.0, 0.0]], requires_grad=True)  # [G, B]
    w = balance_weights(kl)
    assert not w.requires_grad
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    raw = torch.tensor([2.01, 20.01, 0.01])
    assert torch.allclose(w, raw / raw.mean())
    big = balance_weights(torch.rand(7, 8) * 1e4)
    assert big.mean().item() == pytest.approx(1.0, abs=1e-6)


def _output(kl_values: list[float], scales: tuple[int, ...], batch: int = 2) -> NvaeOutput:
    """A fake forward pass: each group's KL map is constant so its sum is ``kl_values[g]``."""
    kl = tuple(torch.full((batch, 2, 2, 2), v / 8.0) for v in kl_values)
    logits = torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return NvaeOutput(logits, kl, scales)


def test_terms_beta_per_scale_and_sum() -> None:
    out = _output([5.0, 2.0, 1.0, 3.0], scales=(2, 1, 0, 0))
    target = F.one_hot(torch.randint(0, 4, (2, 8, 8)), 4).permute(0, 3, 1, 2).float()
    t = nvae_loss(out, target, beta=(8.0, 10.0, 11.0), kl_coeff=1.0, balance=True)
    assert t["kl_scale_0"].item() == pytest.approx(4.0)
    assert t["kl_scale_1"].item() == pytest.approx(2.0)
    assert t["kl_scale_2"].item() == pytest.approx(5.0)
    assert t["kl_total"].item() == pytest.approx(11.0)
    # coefficient 1: no balancing, plain beta-weighted sum (beta[0] is the finest scale)
    assert t["kl_weighted"].item() == pytest.approx(8 * 4 + 10 * 2 + 11 * 5)
    expected_recon = F.cross_entropy(out.logits, target.argmax(1), reduction="sum") / 2
    assert t["recon"].item() == pytest.approx(expected_recon.item(), rel=1e-5)
    assert t["loss"].item() == pytest.approx((t["recon"] + t["kl_weighted"]).item())
    assert t["spectral"].item() == 0.0 and t["kl_coeff"].item() == 1.0


def test_labels_target_equals_one_hot_target() -> None:
    out = _output([1.0], scales=(0,))
    labels = torch.randint(0, 4, (2, 8, 8))
    one_hot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    a = nvae_loss(out, labels, (1.0,), 1.0, False)["recon"]
    b = nvae_loss(out, one_hot, (1.0,), 1.0, False)["recon"]
    assert torch.allclose(a, b)


def test_warmup_and_balancing_weight_the_kl() -> None:
    out = _output([5.0, 2.0, 1.0, 3.0], scales=(2, 1, 0, 0))
    target = torch.randint(0, 4, (2, 8, 8))
    beta = (1.0, 1.0, 1.0)
    plain = nvae_loss(out, target, beta, kl_coeff=0.5, balance=False)
    assert plain["kl_weighted"].item() == pytest.approx(0.5 * 11.0)
    balanced = nvae_loss(out, target, beta, kl_coeff=0.5, balance=True)
    w = torch.tensor([5.01, 2.01, 1.01, 3.01])
    w = w / w.mean()
    expected = 0.5 * float((w * torch.tensor([5.0, 2.0, 1.0, 3.0])).sum())
    assert balanced["kl_weighted"].item() == pytest.approx(expected, rel=1e-5)
    spectral = nvae_loss(out, target, beta, 0.5, False, spectral=torch.tensor(2.5))
    assert spectral["loss"].item() == pytest.approx(plain["loss"].item() + 2.5)


def test_non_finite_loss_raises_a_specific_error() -> None:
    out = _output([float("inf"), 1.0], scales=(1, 0))
    with pytest.raises(KLDivergenceError, match="diverged at step 17") as err:
        nvae_loss(out, torch.randint(0, 4, (2, 8, 8)), (1.0, 1.0), 1.0, False, step=17)
    assert isinstance(err.value, SeglabError) and err.value.step == 17
    assert err.value.terms["kl_scale_1"] == float("inf")
