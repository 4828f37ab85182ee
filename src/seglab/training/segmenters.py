"""The cardiac segmenter as every trainer builds it: a network of ``segmenters.nets`` in the
shared :class:`~seglab.training.segmentation_module.SegmentationModule`, with the training
recipe of ``segmenters.train_for(arch)`` (the stage, the benchmarks and the GPU run alike)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch

from seglab.config import SegmentersParams, SegmenterTrainParams
from seglab.data.labels import NUM_LABELS, STRUCTURE_LABELS, STRUCTURES
from seglab.data.store import SliceSet, end_weights, image_context, input_channels
from seglab.models.segmenters import build_segmenter
from seglab.training.datamodule import TensorDataModule
from seglab.training.fit import seed
from seglab.training.segmentation_module import SegmentationModule, recipe_kwargs

CLASS_NAMES = dict(zip(STRUCTURE_LABELS, STRUCTURES, strict=True))
#: What checkpoints, early stopping and progress lines watch.
MONITOR = "val_dice_mean"


def new_module(arch: str, params: SegmentersParams) -> SegmentationModule:
    """An untrained segmenter of ``arch`` in the shared training module, initialised from the
    training's seed."""
    net_params = getattr(params.nets, arch)
    train = params.train_for(arch)
    seed(train.trainer)
    channels = input_channels(train.context_slices, train.slice_position)
    return SegmentationModule(
        build_segmenter(arch, params.nets, in_channels=channels),
        NUM_LABELS,
        **recipe_kwargs(train),
        class_names=CLASS_NAMES,
        monitor=MONITOR,
        fixed_channels=int(train.slice_position),
        hparams={
            "arch": arch,
            "net_params": net_params.model_dump(mode="json"),
            "context_slices": train.context_slices,
            "slice_position": train.slice_position,
        },
    )


def train_weights(train: SegmenterTrainParams, meta: pd.DataFrame) -> torch.Tensor | None:
    """How often each training slice (rows of ``meta``) is drawn under ``oversample_ends``, for
    :class:`~seglab.training.datamodule.TensorDataModule`; ``None``: a plain shuffle."""
    if train.oversample_ends == 1:
        return None
    return torch.from_numpy(end_weights(meta, train.oversample_ends))


def segmenter_data(
    splits: Mapping[str, SliceSet],
    train: SegmenterTrainParams,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
) -> TensorDataModule:
    """What a segmenter of recipe ``train`` trains on: the ``train`` and ``val`` slices of
    ``splits`` as its input (neighbours and place as the recipe says) with their label maps,
    batches of ``batch_size`` (the recipe's by default) drawn as ``oversample_ends`` says, the
    tensors on ``device`` (a GPU holds the whole prepared set and indexes batches there).

    >>> data = segmenter_data(splits, params.segmenters.train_for("resunet"))
    """

    def tensors(slices: SliceSet) -> tuple[torch.Tensor, torch.Tensor]:
        image = image_context(slices, train.context_slices, train.slice_position)
        return torch.from_numpy(image).to(device), torch.from_numpy(slices.label).to(device)

    return TensorDataModule(
        {name: tensors(splits[name]) for name in ("train", "val")},
        batch_size=batch_size or train.trainer.batch_size,
        seed=train.trainer.seed,
        train_weights=train_weights(train, splits["train"].meta),
    )
