"""A segmenter checkpoint at inference: what it needs is in the file; errors are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seglab.config import (
    SegmentersParams,
    SegmenterTrainParams,
    TrackingParams,
    TrainerParams,
)
from seglab.data.store import SliceSet
from seglab.errors import DataError
from seglab.inference.postprocess import Cleanup
from seglab.inference.segment import (
    cleanup_of,
    context_of,
    flips_of,
    load_segmenter,
    module_input,
    open_segmenter,
    position_of,
)
from seglab.training.segmentation_module import SegmentationModule
from seglab.training.segmenters import new_module


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="x.ckpt: segmenter checkpoint not found"):
        load_segmenter(tmp_path / "x.ckpt")
    (tmp_path / "x.ckpt").write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="x.ckpt: not a readable segmenter checkpoint"):
        load_segmenter(tmp_path / "x.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "x.ckpt")
    with pytest.raises(DataError, match="not a readable segmenter checkpoint"):
        load_segmenter(tmp_path / "x.ckpt")


def test_a_checkpoint_carries_its_input_and_clean_up(tmp_path: Path) -> None:
    train = SegmenterTrainParams(context_slices=1, trainer=TrainerParams(accelerator="cpu"))
    module = new_module("unet", SegmentersParams(train=train))
    module.hparams.update({"flips": True, **Cleanup("heart", 10, across_slices=True).hparams()})
    path = tmp_path / "unet.ckpt"
    _save(module, path)
    loaded = load_segmenter(path)
    assert context_of(loaded) == 1 and cleanup_of(loaded) == Cleanup("heart", 10, True)
    assert flips_of(loaded) and open_segmenter(str(path), TrackingParams(), tmp_path).flips
    image = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.eval()(image), module.eval()(image))


def test_a_checkpoint_that_sees_the_place_in_the_stack_builds_its_own_input(
    tmp_path: Path,
) -> None:
    train = SegmenterTrainParams(
        context_slices=1, slice_position=True, trainer=TrainerParams(accelerator="cpu")
    )
    module = new_module("unet", SegmentersParams(train=train))
    path = tmp_path / "unet.ckpt"
    _save(module, path)
    loaded = load_segmenter(path).eval()
    assert context_of(loaded) == 1 and position_of(loaded)
    slices = _stack(count=3)
    images = module_input(loaded, slices)
    assert images.shape == (3, 4, 32, 32) and images[:, 3, 0, 0].tolist() == [0.0, 0.5, 1.0]
    segmenter = open_segmenter(str(path), TrackingParams(), tmp_path)
    assert segmenter.position and segmenter(slices).shape == (3, 32, 32)


def _stack(count: int) -> SliceSet:
    """One volume of ``count`` random 32 x 32 slices."""
    meta = pd.DataFrame(
        {"patient": "p", "frame": 1, "slice_index": range(count), "slice_count": count}
    )
    image = np.random.default_rng(0).random((count, 32, 32), dtype=np.float32)
    return SliceSet(image, np.zeros(image.shape, np.uint8), meta)


def _save(module: SegmentationModule, path: Path) -> None:
    """``module`` as the training stage's checkpoint holds it: weights and hyper-parameters."""
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2.6.6",
        },
        path,
    )
