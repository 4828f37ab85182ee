"""NVAE's residual cells (Vahdat & Kautz 2020, fig. 3), written for this project.

Both cells return ``skip + 0.1 * branch``: the small residual scale keeps a deep stack close to
the identity at initialisation, one of the paper's stabilisers. A cell that changes resolution
or width has a learned skip (resample + 1x1 conv) instead of the identity.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

RESIDUAL_SCALE = 0.1
EXPANSION = 6
SE_REDUCTION = 16
SE_MIN_HIDDEN = 4


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (the paper puts SE at the end of every cell)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // SE_REDUCTION, SE_MIN_HIDDEN)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class EncoderCell(nn.Module):
    """Residual cell ``BN-SiLU-conv3x3-BN-SiLU-conv3x3-SE``.

    ``stride=2`` halves the resolution (rounding up, so odd sizes work) and the skip becomes
    ``avgpool(2) + conv1x1``; a width change alone gets a 1x1 conv skip.
    """

    def __init__(
        self, in_channels: int, out_channels: int, bn_momentum: float, stride: int = 1
    ) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels, momentum=bn_momentum),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels, momentum=bn_momentum),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            SqueezeExcite(out_channels),
        )
        skip: list[nn.Module] = []
        if stride == 2:
            skip.append(nn.AvgPool2d(2, ceil_mode=True))
        if stride == 2 or in_channels != out_channels:
            skip.append(nn.Conv2d(in_channels, out_channels, 1))
        self.skip = nn.Sequential(*skip)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + RESIDUAL_SCALE * self.branch(x)


class DecoderCell(nn.Module):
    """Inverted residual cell ``BN-conv1x1(x6)-BN-SiLU-dwconv5x5-BN-SiLU-conv1x1-BN-SE``.

    The depthwise 5x5 gives a large receptive field cheaply (the paper's reason for it in the
    generative path). With ``size`` set, the input is first upsampled (nearest) to
    ``size x size``; the skip is then ``upsample + conv1x1``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bn_momentum: float,
        size: int | None = None,
    ) -> None:
        super().__init__()
        hidden = in_channels * EXPANSION
        self.size = size
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels, momentum=bn_momentum),
            nn.Conv2d(in_channels, hidden, 1),
            nn.BatchNorm2d(hidden, momentum=bn_momentum),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden),
            nn.BatchNorm2d(hidden, momentum=bn_momentum),
            nn.SiLU(),
            nn.Conv2d(hidden, out_channels, 1),
            nn.BatchNorm2d(out_channels, momentum=bn_momentum),
            SqueezeExcite(out_channels),
        )
        resample = size is not None or in_channels != out_channels
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if resample else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        return self.skip(x) + RESIDUAL_SCALE * self.branch(x)
