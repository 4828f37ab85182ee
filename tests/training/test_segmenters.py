from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from seglab.config import SegmentersParams, SegmenterTrainParams
from seglab.data.store import SliceSet
from seglab.inference.segment import module_input
from seglab.training.segmenters import new_module, segmenter_data, train_weights


def test_train_weights_are_a_plain_shuffle_unless_the_ends_are_oversampled() -> None:
    meta = pd.DataFrame({"slice_index": [0, 1, 2, 3, 4], "slice_count": [5] * 5})
    assert train_weights(SegmenterTrainParams(), meta) is None
    weights = train_weights(SegmenterTrainParams(oversample_ends=2.0), meta)
    assert weights is not None and weights.tolist() == [2.0, 2.0, 1.0, 2.0, 2.0]


def _stack(n: int) -> SliceSet:
    meta = pd.DataFrame({"patient": "p", "frame": 1, "slice_index": np.arange(n), "slice_count": n})
    image = np.random.default_rng(n).random((n, 16, 16), dtype=np.float32)
    return SliceSet(image, np.ones(image.shape, np.uint8), meta)


def test_segmenter_data_feeds_the_module_what_it_was_built_to_take() -> None:
    recipe = {"context_slices": 1, "slice_position": True, "oversample_ends": 2.0,
              "trainer": {"batch_size": 3}}  # fmt: skip
    params = SegmentersParams(nets={"unet": {"channels": [4, 8]}}, train=recipe)
    splits = {"train": _stack(5), "val": _stack(4), "test": _stack(2)}
    module = new_module("unet", params)
    data = segmenter_data(splits, params.train)
    assert set(data.splits) == {"train", "val"}  # the test split never trains
    for name in ("train", "val"):
        image, label = data.splits[name]
        torch.testing.assert_close(image, module_input(module, splits[name]))
        assert label.dtype == torch.uint8 and len(label) == len(splits[name])
    assert data.batch_size == 3 and data.train_weights.tolist() == [2.0, 2.0, 1.0, 2.0, 2.0]
    assert module.net(data.splits["train"][0]).shape == (5, 4, 16, 16)
    assert segmenter_data(splits, params.train, batch_size=2).batch_size == 2
