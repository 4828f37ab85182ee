"""``volume_model.py``: the 3D network's stacks come back as their own slices, and the script
trains, chooses its inference on the validation split alone (for itself, a 2D segmenter and the
mean of both), scores the test split and, run again, resumes instead of training anew."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tests.benchmarks.test_benchmarks import _script, one_epoch_argv, prepared
from tests.benchmarks.test_real_acdc_scripts import _checkpoint
from torch import nn

from seglab.data.store import SliceSet
from seglab.training.segmentation_module import SegmentationModule

volume_model = _script("volume_model")
_script("common")  # the stand-in slices of ``prepared``


def test_stack_net_returns_each_slice_its_own_logits_in_order() -> None:
    conv = nn.Conv3d(1, 2, kernel_size=1)
    stack = torch.randn(2, 3, 8, 8)  # two stacks of three slices
    out = volume_model.StackNet(conv)(stack)
    assert out.shape == (6, 2, 8, 8)
    for b in range(2):
        for z in range(3):
            expected = conv(stack[b, z][None, None, :, :, None])[0, :, :, :, 0]
            torch.testing.assert_close(out[3 * b + z], expected)


def test_stack_probabilities_come_back_in_the_splits_row_order() -> None:
    # Rows out of slice order, two volumes interleaved; each slice's image is its row number.
    meta = pd.DataFrame(
        {"patient": list("pqpqp"), "frame": [1] * 5, "slice_index": [2, 1, 0, 0, 1]}
    )
    image = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 4, 4), np.float32)
    slices = SliceSet(image, np.zeros((5, 4, 4), np.uint8), meta)
    conv = nn.Conv3d(1, 4, kernel_size=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0] = 1.0  # class 0's logit is the pixel: rises with the row number
    module = SegmentationModule(volume_model.StackNet(conv), 4)
    probs = volume_model.stack_probabilities(module, *volume_model.stacks(slices), flips=False)
    first = probs[:, 0, 0, 0]
    assert probs.shape == (5, 4, 4, 4) and bool((first.diff() > 0).all())


def test_the_plan_pools_in_plane_and_turns_3d_below_the_in_plane_levels() -> None:
    net = volume_model.dynunet([4, 8, 16], in_plane_levels=1).net
    assert net.kernel_size == [(3, 3, 1), (3, 3, 3), (3, 3, 3)]
    assert net.strides == [(1, 1, 1), (2, 2, 1), (2, 2, 1)]
    out = volume_model.StackNet(net)(torch.randn(1, 5, 32, 32))  # any stack depth
    assert out.shape == (5, 4, 32, 32)


def test_trains_chooses_on_validation_and_scores_the_test_split(tmp_path: Path) -> None:
    folder = prepared(tmp_path / "prepared")
    out = tmp_path / "out" / "stack"
    argv = one_epoch_argv(tmp_path, folder, out)
    argv += ["--filters", "4", "8", "16", "--in-plane-levels", "1"]
    two_d = _checkpoint(tmp_path / "resunet.ckpt", "resunet", 0)
    result = volume_model.main([*argv, "--ensemble", str(two_d)])
    assert json.loads(out.with_name("stack.json").read_text()) == result
    for row in (result, result["resunet"], result["ensemble"]):
        options = row["val_dice_mean_options"]
        assert row["chosen_val_dice_mean"] == max(options.values())  # validation decides
        assert set(row["test"]) >= {"dice_mean", "anatomical_validity", "dice3d_mean"}
    assert result["epochs"] == 1 and result["test_slices"] == 4
    curves = pd.read_csv(out.with_name("stack.curves.csv"))
    assert list(curves["epoch"]) == [0] and "val_dice_mean" in curves
    assert result["test"]["rv_missed"] >= 0 and "lv_false_positive" in result["val"]
    again = volume_model.main(argv)
    assert again["epochs"] == 1 and again["train_seconds"] == result["train_seconds"]  # resumed
