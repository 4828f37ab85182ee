"""A segmenter checkpoint at inference: what it needs is in the file; errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seglab.config import (
    SegmentersParams,
    SegmenterTrainParams,
    TrackingParams,
    TrainerParams,
)
from seglab.errors import DataError
from seglab.inference.postprocess import Cleanup
from seglab.inference.segment import (
    cleanup_of,
    context_of,
    flips_of,
    load_segmenter,
    open_segmenter,
)
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
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2.6.6",
        },
        path,
    )
    loaded = load_segmenter(path)
    assert context_of(loaded) == 1 and cleanup_of(loaded) == Cleanup("heart", 10, True)
    assert flips_of(loaded) and open_segmenter(str(path), TrackingParams(), tmp_path).flips
    image = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.eval()(image), module.eval()(image))
