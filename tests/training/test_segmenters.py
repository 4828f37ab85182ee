from __future__ import annotations

import pandas as pd

from seglab.config import SegmenterTrainParams
from seglab.training.segmenters import train_weights


def test_train_weights_are_a_plain_shuffle_unless_the_ends_are_oversampled() -> None:
    meta = pd.DataFrame({"slice_index": [0, 1, 2, 3, 4], "slice_count": [5] * 5})
    assert train_weights(SegmenterTrainParams(), meta) is None
    weights = train_weights(SegmenterTrainParams(oversample_ends=2.0), meta)
    assert weights is not None and weights.tolist() == [2.0, 2.0, 1.0, 2.0, 2.0]
