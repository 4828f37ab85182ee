"""The study's 2D segmenters, all MONAI networks: UNet, ResUNet, Attention UNet, SwinUNETR.

Every network maps ``[B, in_channels, H, W]`` images to ``[B, num_classes, H, W]`` logits. Sizes
come from :class:`~seglab.config.SegmenterNetsParams`; ``H`` and ``W`` must be divisible by the
product of a UNet's strides (``2 ** (levels - 1)`` by default; by 32 for SwinUNETR).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import get_args

import torch
from monai.networks.nets import AttentionUnet, SwinUNETR, UNet
from torch import nn

from seglab.config import SegmenterArch, SegmenterNetsParams
from seglab.errors import ConfigError


def unet(
    in_channels: int,
    num_classes: int,
    channels: tuple[int, ...],
    strides: tuple[int, ...] | None = None,
    residual_units: int = 0,
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI ``UNet`` (``residual_units`` 2: the study's ResUNet); strides 2 at every level
    unless given."""
    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels,
        strides=strides or (2,) * (len(channels) - 1),
        num_res_units=residual_units,
        dropout=dropout,
    )


def attention_unet(
    in_channels: int, num_classes: int, channels: tuple[int, ...], dropout: float = 0.0
) -> nn.Module:
    """MONAI ``AttentionUnet``, stride 2 at every level."""
    return AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        dropout=dropout,
    )


def swin_unetr(
    in_channels: int,
    num_classes: int,
    feature_size: int,
    depths: tuple[int, ...],
    num_heads: tuple[int, ...],
    use_v2: bool = False,
) -> nn.Module:
    """MONAI ``SwinUNETR`` in 2D (``use_v2``: SwinUNETR-V2's convolution block per stage)."""
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        feature_size=feature_size,
        depths=depths,
        num_heads=num_heads,
        spatial_dims=2,
        use_v2=use_v2,
    )


#: Every architecture by name (``segmenters.archs``, ``--arch``, DVC's foreach, the registered
#: ``acdc-segmenter-<name>``): the builder its ``segmenters.nets.<name>`` section is passed to
#: as keyword arguments.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "unet": unet,
    "resunet": unet,
    "attunet": attention_unet,
    "swinunetr": swin_unetr,
}
ARCHS: tuple[str, ...] = get_args(SegmenterArch)


def build_segmenter(
    arch: str, nets: SegmenterNetsParams, in_channels: int = 1, num_classes: int = 4
) -> nn.Module:
    """A freshly initialised network of architecture ``arch`` (one of :data:`ARCHS`)."""
    if arch not in BUILDERS:
        raise ConfigError(f"unknown segmenter architecture '{arch}' (known: {', '.join(ARCHS)})")
    sizes = getattr(nets, arch).model_dump()
    return BUILDERS[arch](in_channels, num_classes, **sizes)


def parameter_count(net: nn.Module) -> int:
    """Trainable parameters (the study's size column)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def weights_mb(net: nn.Module) -> float:
    """Size of the serialised ``state_dict`` in MiB: what the weights take on disk."""
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20
