"""What the seglab command silences: library tips and deprecations, never our own progress."""

from __future__ import annotations

import subprocess
import sys

FIT = """
import sys, tempfile, torch
if sys.argv[1] == "quiet":
    from seglab.quiet import quiet_libraries
    quiet_libraries()
from seglab.config import SegmenterNetsParams, TrainerParams, UNetParams
from seglab.models.segmenters import build_segmenter
from seglab.training.datamodule import TensorDataModule
from seglab.training.fit import fit
from seglab.training.segmentation_module import SegmentationModule
net = build_segmenter("unet", SegmenterNetsParams(unet=UNetParams(channels=(4, 8))))
x = torch.rand(8, 1, 16, 16)
y = (x[:, 0] * 4).clamp(max=3).to(torch.uint8)
data = TensorDataModule({"train": (x, y), "val": (x, y)}, batch_size=4)
params = TrainerParams(accelerator="cpu", batch_size=4, max_epochs=1)
work = tempfile.mkdtemp()
open(work + "/mlflow-run-id", "w").write("0")  # a stage's work folder keeps its run id
fit(SegmentationModule(net, 4), data, params, work, monitor="val_dice_mean")
"""
NOISE = (
    "litlogger",
    "LeafSpec",
    "TPU available",
    "on_after_batch_transfer",
    "configured so 100%",
    "exists and is not empty",
)


def _stderr(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", FIT, mode], capture_output=True, text=True, check=True, timeout=300
    )
    return done.stdout + done.stderr


def test_library_noise_goes_and_progress_stays() -> None:
    loud, quiet = _stderr("loud"), _stderr("quiet")
    assert all(noise in loud for noise in NOISE)  # so the test would see it come back
    assert not [noise for noise in NOISE if noise in quiet]
    assert "epoch 1/1" in quiet and "GPU available" in quiet
