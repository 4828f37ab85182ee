"""A trained NVAE at inference: load it from a checkpoint, reconstruct masks from the posterior
means, sample new ones from the prior, and the network the registry serves (one-hot masks in,
the posterior-mean reconstruction's logits out)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from seglab.data.labels import NUM_LABELS
from seglab.errors import DataError
from seglab.models.nvae import Nvae
from seglab.training.fit import default_eval_batch
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


def _network(model: Nvae | NvaeModule) -> Nvae:
    return model.model if isinstance(model, NvaeModule) else model


@contextmanager
def _evaluating(
    model: Nvae | NvaeModule, device: str | torch.device | None, batch_size: int | None
) -> Iterator[tuple[Nvae, torch.device, int]]:
    """``model``'s network in eval mode on ``device`` (default: where it is) and the batch size
    for it; the network's training mode comes back afterwards."""
    net = _network(model)
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.to(dev).eval()
    try:
        yield net, dev, batch_size or default_eval_batch(dev)
    finally:
        net.train(was_training)


def _labels(masks: Tensor) -> np.ndarray:
    return masks.argmax(1).to(torch.uint8).cpu().numpy()


def input_labels(inputs: Tensor | np.ndarray) -> np.ndarray:
    """uint8 ``[N, H, W]`` label map of the current slice in one-hot inputs ``[N, 4 k, H, W]``
    (the middle of the k stacked masks: the mask itself, or the centre of a 3-gram)."""
    tensor = torch.as_tensor(inputs)
    maps = tensor.shape[1] // NUM_LABELS
    if tensor.ndim != 4 or maps * NUM_LABELS != tensor.shape[1]:
        raise ValueError(f"inputs must be [N, 4k, H, W] one-hot, got {tuple(tensor.shape)}")
    middle = maps // 2
    return _labels(tensor[:, middle * NUM_LABELS : (middle + 1) * NUM_LABELS])


@torch.no_grad()
def reconstruct(
    model: Nvae | NvaeModule,
    inputs: Tensor,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """uint8 ``[N, H, W]`` argmax labels decoded from the posterior means, in batches."""
    with _evaluating(model, device, batch_size) as (net, dev, batch):
        parts = [
            _labels(net.reconstruct(inputs[i : i + batch].to(dev).float()))
            for i in range(0, len(inputs), batch)
        ]
    height, width = inputs.shape[-2:]
    return np.concatenate(parts) if parts else np.zeros((0, height, width), np.uint8)


@torch.no_grad()
def generate(
    model: Nvae | NvaeModule,
    n: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """uint8 ``[n, H, W]`` masks decoded from the prior, seeded (the global RNG is untouched)."""
    with _evaluating(model, device, batch_size) as (net, dev, batch):
        fork = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(seed)
            parts = [
                _labels(net.sample(min(batch, n - i), temperature)) for i in range(0, n, batch)
            ]
    size = net.image_size
    return np.concatenate(parts) if parts else np.zeros((0, size, size), np.uint8)
