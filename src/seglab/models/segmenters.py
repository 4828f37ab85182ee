"""The study's 2D segmenters, all MONAI networks: UNet, ResUNet, Attention UNet, SwinUNETR.

Every network maps ``[B, in_channels, H, W]`` images to ``[B, num_classes, H, W]`` logits. Sizes
come from :class:`~seglab.config.SegmenterNetsParams`; ``H`` and ``W`` must be divisible by the
product of a UNet's strides (``2 ** (levels - 1)`` by default; by 32 for SwinUNETR).
"""

from __future__ import annotations

import io
from typing import get_args

import torch
from monai.networks.nets import AttentionUnet, SwinUNETR, UNet
from torch import nn

from seglab.config import SegmenterArch, SegmenterNetsParams
from seglab.errors import ConfigError

ARCHS: tuple[str, ...] = get_args(SegmenterArch)


def build_segmenter(
    arch: str, nets: SegmenterNetsParams, in_channels: int = 1, num_classes: int = 4
) -> nn.Module:
    """A freshly initialised network of architecture ``arch`` (one of :data:`ARCHS`)."""
    if arch in ("unet", "resunet"):
        p = nets.unet if arch == "unet" else nets.resunet
        return UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=p.channels,
            strides=p.monai_strides(),
            num_res_units=p.residual_units,
            dropout=p.dropout,
        )
    if arch == "attunet":
        a = nets.attunet
        return AttentionUnet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=a.channels,
            strides=(2,) * (len(a.channels) - 1),
            dropout=a.dropout,
        )
    if arch == "swinunetr":
        s = nets.swinunetr
        return SwinUNETR(
            in_channels=in_channels,
            out_channels=num_classes,
            feature_size=s.feature_size,
            depths=s.depths,
            num_heads=s.num_heads,
            spatial_dims=2,
        )
    raise ConfigError(f"unknown segmenter architecture '{arch}' (known: {', '.join(ARCHS)})")


def parameter_count(net: nn.Module) -> int:
    """Trainable parameters (the study's size column)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def weights_mb(net: nn.Module) -> float:
    """Size of the serialised ``state_dict`` in MiB: what the weights take on disk."""
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20
