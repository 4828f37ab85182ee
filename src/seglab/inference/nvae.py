"""A trained NVAE at inference: load it from a checkpoint, and the network the registry serves
(one-hot masks in, the posterior-mean reconstruction's logits out)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from torch import Tensor, nn

from seglab.errors import DataError
from seglab.models.nvae import Nvae
from seglab.training.nvae_module import NvaeModule

#: The file name of a trained NVAE (of ground-truth masks, or a corrector) in its models folder.
CHECKPOINT = "nvae.ckpt"


class NvaeReconstructor(nn.Module):
    """What the registry serves: one-hot masks ``[B, in, H, W]`` in, the logits ``[B, 4, H, W]``
    of the posterior-mean reconstruction out (argmax: the reconstructed or corrected mask)."""

    def __init__(self, nvae: Nvae) -> None:
        super().__init__()
        self.nvae = nvae

    def forward(self, x: Tensor) -> Tensor:
        return self.nvae(x, sample=False).logits


def load_nvae(path: Path) -> NvaeModule:
    """A trained NVAE from a checkpoint of :func:`~seglab.training.nvae_fit.train_nvae_model`
    (the NVAE stage's, a corrector's), in eval mode on the CPU; its size and params come from
    the checkpoint, not the current params."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "NVAE checkpoint not found (run `dvc repro` to train it)")
    try:
        return NvaeModule.load_from_checkpoint(path, map_location="cpu").eval()
    except (OSError, RuntimeError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable NVAE checkpoint ({exc})") from exc
