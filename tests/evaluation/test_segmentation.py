"""``pick_inference``: validation Dice alone picks the flips setting and the clean-up, flips and
clean-ups must earn their place, and a fixed clean-up is the only one tried."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seglab.data.labels import LV, RV
from seglab.data.store import SliceSet
from seglab.evaluation.segmentation import dice_mean, pick_inference
from seglab.inference.postprocess import Cleanup


def _volume() -> SliceSet:
    """Three slices of one volume, an LV square on each and an RV on the middle one only."""
    label = np.zeros((3, 24, 24), np.uint8)
    label[:, 6:14, 6:14] = LV
    label[1, 6:14, 15:20] = RV
    meta = pd.DataFrame(
        {
            "patient": "p",
            "frame": 1,
            "slice_index": [0, 1, 2],
            "spacing_x": np.float32(1.5),
            "spacing_y": np.float32(1.5),
        }
    )
    return SliceSet(label.astype(np.float32), label, meta)


def test_validation_dice_picks_the_prediction_and_the_clean_up() -> None:
    val = _volume()
    speck = val.label.copy()
    speck[0, 20:22, 20:22] = (
        RV  # 4 pixels of RV where the annotators drew none: that slice's RV counts 0
    )
    worse = val.label.copy()
    worse[:, 6:9, 6:14] = 0  # the flip-averaged prediction misses part of every LV
    flips, cleanup, scores = pick_inference({False: speck, True: worse}, val)
    assert not flips and cleanup != Cleanup()  # the speck must go, by size or as a 3D region
    assert scores[cleanup.name] == max(scores.values()) == 1.0
    assert scores["none_min0"] == dice_mean(speck, val) < 1.0
    assert {"none_min0", "flips_none_min0"} <= set(scores)


def test_flips_and_clean_ups_must_earn_their_place() -> None:
    val = _volume()
    flips, cleanup, scores = pick_inference({False: val.label, True: val.label}, val)
    assert not flips and cleanup == Cleanup()  # on a tie the plain prediction, no clean-up
    assert scores["none_min0"] == scores["flips_none_min0"] == max(scores.values()) == 1.0


def test_a_fixed_clean_up_is_the_only_one_scored() -> None:
    val = _volume()
    worse = val.label.copy()
    worse[1] = 0  # an emptied slice
    fixed = Cleanup("heart", 10, True)
    flips, cleanup, scores = pick_inference({False: worse, True: val.label}, val, fixed)
    assert flips and cleanup == fixed
    assert set(scores) == {fixed.name, "flips_" + fixed.name}
