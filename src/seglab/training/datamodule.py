"""In-memory data for every training stage: a split is loaded once, batches are tensor slices.

The prepared sets are small (ACDC at 128x128 is ~130 MB per split), so there is no per-item
file read or decoding in the training loop: a DataLoader over tensors, or the tensors moved
to the accelerator once.
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler


class TensorDataModule(L.LightningDataModule):
    """Batches of ``(inputs, targets)`` tensors per split (``train``, ``val``, ``test``).

    Training batches are a seeded shuffle, or with ``train_weights`` (one per training sample)
    as many seeded draws with replacement, each sample in proportion to its weight.
    """

    def __init__(
        self,
        splits: Mapping[str, tuple[torch.Tensor, ...]],
        batch_size: int,
        seed: int = 0,
        eval_batch_size: int | None = None,
        drop_last: bool = False,
        train_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.splits = dict(splits)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 64)
        self.seed = seed
        # Drop an incomplete last training batch: batch-norm on pooled 1x1 features (DeepLabV3's
        # ASPP pooling) cannot train on a batch of one.
        self.drop_last = drop_last
        self.train_weights = train_weights

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits or len(self.splits[split][0]) == 0:
            raise ValueError(f"no '{split}' slices: the split is empty")
        generator = torch.Generator().manual_seed(self.seed)
        weights = self.train_weights if train else None
        sampler = (
            None
            if weights is None
            else WeightedRandomSampler(weights, len(weights), replacement=True, generator=generator)
        )
        return DataLoader(
            TensorDataset(*self.splits[split]),
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and self.drop_last,
            generator=generator if train and sampler is None else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
