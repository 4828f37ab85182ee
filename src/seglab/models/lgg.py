"""The brain study's networks: segmentation-models-pytorch decoders on ResNet encoders.

An architecture is named ``<decoder>-<encoder>`` (``unet-resnet18``, ``deeplabv3-resnet18``,
``unet-resnet101``): the DVC variant, the ``--arch`` value and the suffix of the registered model
``lgg-<decoder>-<encoder>``. Every network maps ``[B, 3, H, W]`` images (pre-contrast, FLAIR,
post-contrast in [0, 1]) to ``[B, 1, H, W]`` logits of the FLAIR abnormality; ``H`` and ``W``
must be divisible by 32 (five stride-2 stages in the encoder).

Encoders start from random weights unless a local weights file is given: nothing is downloaded
(smp would fetch ImageNet weights from the Hugging Face hub, which an offline machine cannot
reach and DVC cannot track). A file that is missing or does not fit the encoder is a
:class:`~seglab.errors.ConfigError` naming the file, never a silent fallback to random weights.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import get_args

import segmentation_models_pytorch as smp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from seglab.config import LggDecoder, split_arch_name
from seglab.errors import ConfigError

DECODERS: tuple[str, ...] = get_args(LggDecoder)
_CLASSES: dict[str, type[nn.Module]] = {
    "unet": smp.Unet,
    "linknet": smp.Linknet,
    "fpn": smp.FPN,
    "pspnet": smp.PSPNet,
    "deeplabv3": smp.DeepLabV3,
}


def build_lgg_net(
    name: str, *, in_channels: int = 3, weights_file: Path | None = None
) -> nn.Module:
    """The network ``<decoder>-<encoder>`` with one output channel (binary logits).

    ``weights_file`` (an encoder ``state_dict``: a torchvision ResNet ``.pth`` or smp's hub
    ``model.safetensors``) initialises the encoder; without it every weight is random.
    """
    decoder, encoder = split_arch_name(name)
    if encoder not in smp.encoders.get_encoder_names():
        raise ConfigError(f"'{name}': unknown encoder '{encoder}' for segmentation-models-pytorch")
    net = _CLASSES[decoder](
        encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=1
    )
    if weights_file is not None:
        load_encoder_weights(net, weights_file)
    return net


def load_encoder_weights(net: nn.Module, path: Path) -> None:
    """Load a local encoder ``state_dict`` into ``net.encoder`` (every key must fit)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: encoder weights file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        OSError,
        RuntimeError,
        ValueError,
        SafetensorError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:
        raise ConfigError(f"{path}: not a readable weights file ({_first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a state_dict (parameter name -> tensor)")
    try:
        # smp's ResNet encoders drop torchvision's classifier (fc.*) keys themselves.
        net.encoder.load_state_dict(dict(state))
    except RuntimeError as exc:
        raise ConfigError(
            f"{path}: does not fit the {type(net.encoder).__name__} encoder ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] or type(exc).__name__
