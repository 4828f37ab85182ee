from __future__ import annotations

import pytest
import torch

from seglab.training.datamodule import TensorDataModule


def _drawn(data: TensorDataModule) -> list[int]:
    return [int(i) for batch in data.train_dataloader() for i in batch[0]]


def _data(weights: torch.Tensor | None = None, seed: int = 0) -> TensorDataModule:
    ids = torch.arange(10)
    return TensorDataModule(
        {"train": (ids, ids), "val": (ids, ids)}, batch_size=4, seed=seed, train_weights=weights
    )


def test_without_weights_each_epoch_is_a_seeded_shuffle_of_every_sample() -> None:
    drawn = _drawn(_data())
    assert sorted(drawn) == list(range(10)) and drawn != list(range(10))
    assert drawn == _drawn(_data())


def test_weights_draw_as_many_samples_in_proportion_seeded() -> None:
    weights = torch.ones(10)
    weights[:2] = 9.0  # two samples hold 18 of 26 parts of the mass
    drawn = [i for seed in range(20) for i in _drawn(_data(weights, seed))]
    assert len(drawn) == 200
    assert sum(i < 2 for i in drawn) / len(drawn) == pytest.approx(18 / 26, abs=0.08)
    assert _drawn(_data(weights, 3)) == _drawn(_data(weights, 3))


def test_evaluation_batches_keep_the_split_in_order() -> None:
    data = _data(torch.ones(10))
    assert [int(i) for batch in data.val_dataloader() for i in batch[0]] == list(range(10))
