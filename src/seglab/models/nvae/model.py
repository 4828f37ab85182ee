"""Hierarchical NVAE (Vahdat & Kautz, NeurIPS 2020) for one-hot segmentation masks.

Layout for the defaults (128x128 input, stem width ``C``, 3 pre-processing blocks, 3 scales)::

    x [B, in, 128, 128] -> 2x - 1 -> stem conv3x3 (C)
      -> 3 stride-2 encoder cells: C*2 @64, C*4 @32, C*8 @16
      -> scale 0 (16x16, C*8):  4 encoder cells -> down -> scale 1 (8x8, C*16): 2 cells
      -> down -> scale 2 (4x4, C*32): 1 cell
    decoder: learned map [1, C*32, 4, 4] -> group 0 (scale 2, prior N(0, I))
      -> up -> 2 groups at scale 1 -> up -> 4 groups at scale 0
      -> 3 upsampling decoder cells back to 128x128, width C -> ELU + conv3x3 -> logits

Scale order: ``groups_per_scale[i]`` and ``beta[i]`` both describe scale ``i``, with scale 0 the
finest latent scale (16x16 for 128 input) and the last the coarsest (4x4). So the default
``groups_per_scale = (4, 2, 1)`` puts 4 groups at 16x16, 2 at 8x8 and 1 at 4x4, and
``beta = (8, 10, 11)`` is the study's (16x16, 8x8, 4x4) setting. The decoder visits the groups
coarse to fine; :attr:`Nvae.group_scales` gives each group's scale in that order.

Each group after the first: a decoder cell, prior ``N(mu_p, sigma_p)`` from the decoder features
(ELU + conv3x3), residual posterior from encoder + decoder features
(``enc + conv1x1(dec)`` -> ELU + conv3x3), and the latent sample joins the decoder features as
``conv1x1(concat(h, z))``. The encoder feature of a group is the one at the mirrored depth: the
first decoder group reads the deepest encoder cell, the last reads the shallowest.

Sizes: every stride-2 step rounds up and each upsampling returns to the exact size the encoder
had there, so any ``image_size >= 2 ** (preprocess_blocks + scales - 1)`` works (64, 72, 96,
128, ...); a model only accepts inputs of the size it was built for (the learned top map's size
is fixed at construction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seglab.errors import ConfigError
from seglab.models.nvae.cells import DecoderCell, EncoderCell
from seglab.models.nvae.distributions import Gaussian


@dataclass(frozen=True)
class NvaeOutput:
    """What a forward pass gives the loss.

    ``kl[j]`` is the elementwise KL map ``[B, latent, h, w]`` of decoder group ``j`` (coarse to
    fine) and ``group_scales[j]`` its scale (0 = finest).
    """

    logits: Tensor
    kl: tuple[Tensor, ...]
    group_scales: tuple[int, ...]

    def kl_per_group(self) -> Tensor:
        """``[groups, B]``: each group's KL summed over its latent dimensions."""
        return torch.stack([k.flatten(1).sum(1) for k in self.kl])


def _head(channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ELU(), nn.Conv2d(channels, out_channels, 3, padding=1))


class LatentGroup(nn.Module):
    """One group of the top-down path: (upsample,) decoder cell, prior, posterior, combiner.

    The top group has no decoder cell and a fixed ``N(0, I)`` prior; its posterior comes from
    the deepest encoder feature alone.
    """

    def __init__(
        self,
        channels: int,
        latent: int,
        bn_momentum: float,
        top: bool,
        upsample_from: tuple[int, int] | None = None,
    ) -> None:
        """``upsample_from = (channels, size)``: enter this (finer) scale from the coarser one."""
        super().__init__()
        self.latent = latent
        self.up = (
            DecoderCell(upsample_from[0], channels, bn_momentum, size=upsample_from[1])
            if upsample_from is not None
            else None
        )
        self.cell = None if top else DecoderCell(channels, channels, bn_momentum)
        self.prior = None if top else _head(channels, 2 * latent)
        self.mix = None if top else nn.Conv2d(channels, channels, 1)
        self.posterior = _head(channels, 2 * latent)
        self.combine = nn.Conv2d(channels + latent, channels, 1)

    def forward(
        self, h: Tensor, enc: Tensor | None, sample: bool, temperature: float = 1.0
    ) -> tuple[Tensor, Tensor | None]:
        """Next decoder features and the group's KL map (``None`` when ``enc`` is ``None``,
        i.e. when generating from the prior)."""
        if self.up is not None:
            h = self.up(h)
        if self.cell is not None:
            h = self.cell(h)
        if self.prior is None:
            b, _, height, width = h.shape
            prior = Gaussian.standard((b, self.latent, height, width), h.device)
        else:
            prior = Gaussian.from_raw(self.prior(h))
        if enc is None:
            q, kl = prior, None
        else:
            if self.mix is None:
                q = Gaussian.from_raw(self.posterior(enc))
            else:
                q = prior.residual(self.posterior(enc + self.mix(h)))
            kl = q.kl(prior)
        z = q.sample(temperature) if sample else q.mu
        return self.combine(torch.cat([h, z.to(h.dtype)], dim=1)), kl


class Nvae(nn.Module):
    """The NVAE of :mod:`seglab.models.nvae` (see the module docstring for the layout).

    Args:
        in_channels: one-hot input channels (4 for a mask, 12 for a 3-gram of masks).
        num_classes: output classes (4: background, RV, MYO, LV).
        stem_channels: width after the stem (the study's "channels after stem"); doubles at
            every stride-2 block.
        preprocess_blocks: stride-2 encoder blocks between the stem and the finest latent scale.
        groups_per_scale: latent groups per scale, finest first (the study's (4, 2, 1)).
        latent_channels: channels of each latent group.
        bn_momentum: batch-norm momentum of every cell.
        image_size: side of the square input.
    """

    def __init__(
        self,
        in_channels: int = 4,
        num_classes: int = 4,
        stem_channels: int = 4,
        preprocess_blocks: int = 3,
        groups_per_scale: Sequence[int] = (4, 2, 1),
        latent_channels: int = 20,
        bn_momentum: float = 0.05,
        image_size: int = 128,
    ) -> None:
        super().__init__()
        groups = tuple(groups_per_scale)
        if not groups or min(groups) < 1:
            raise ConfigError(f"nvae.groups_per_scale must be >= 1 per scale, got {groups}")
        prep, n_scales, m = preprocess_blocks, len(groups), bn_momentum
        levels = prep + n_scales
        if image_size < 2 ** (levels - 1):
            raise ConfigError(
                f"nvae: image size {image_size} is too small for {prep} pre-processing blocks and "
                f"{n_scales} scales (needs >= {2 ** (levels - 1)})"
            )
        sizes = [image_size]
        for _ in range(levels - 1):
            sizes.append(-(-sizes[-1] // 2))
        widths = [stem_channels * 2**k for k in range(levels)]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size

        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.preprocess = nn.Sequential(
            *(EncoderCell(widths[k], widths[k + 1], m, stride=2) for k in range(prep))
        )
        self.encoder = nn.ModuleList(
            nn.ModuleList(
                EncoderCell(widths[prep + s], widths[prep + s], m) for _ in range(groups[s])
            )
            for s in range(n_scales)
        )
        self.down = nn.ModuleList(
            EncoderCell(widths[prep + s], widths[prep + s + 1], m, stride=2)
            for s in range(n_scales - 1)
        )

        self.top_map = nn.Parameter(torch.zeros(1, widths[-1], sizes[-1], sizes[-1]))
        self.decoder = nn.ModuleList()
        scales: list[int] = []
        for s in reversed(range(n_scales)):
            k = prep + s
            for g in range(groups[s]):
                entering = g == 0 and s < n_scales - 1
                self.decoder.append(
                    LatentGroup(
                        widths[k],
                        latent_channels,
                        m,
                        top=not scales,
                        upsample_from=(widths[k + 1], sizes[k]) if entering else None,
                    )
                )
                scales.append(s)
        self.group_scales = tuple(scales)
        self.postprocess = nn.Sequential(
            *(
                DecoderCell(widths[k + 1], widths[k], m, size=sizes[k])
                for k in reversed(range(prep))
            )
        )
        self.head = _head(widths[0], num_classes)

    def forward(self, x: Tensor, sample: bool = True) -> NvaeOutput:
        """Encode, decode through the posterior (sampled, or its means with ``sample=False``)."""
        self._check(x)
        h = self.preprocess(self.stem(2.0 * x - 1.0))
        feats: list[Tensor] = []
        for s, cells in enumerate(self.encoder):
            for cell in cells:
                h = cell(h)
                feats.append(h)
            if s < len(self.down):
                h = self.down[s](h)
        logits, kl = self._decode(x.shape[0], feats[::-1], sample)
        return NvaeOutput(logits, tuple(kl), self.group_scales)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """One-hot ``[B, classes, H, W]`` argmax mask decoded from the posterior means.

        Deterministic; call in eval mode so batch norm uses its running statistics.
        """
        return self.to_one_hot(self(x, sample=False).logits)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` one-hot masks generated from the prior; ``temperature`` scales every std."""
        logits, _ = self._decode(n, None, True, temperature)
        return self.to_one_hot(logits)

    def to_one_hot(self, logits: Tensor) -> Tensor:
        """Argmax over classes, re-one-hot as float ``[B, classes, H, W]``."""
        return F.one_hot(logits.argmax(1), self.num_classes).permute(0, 3, 1, 2).float()

    def _decode(
        self,
        n: int,
        feats: Sequence[Tensor] | None,
        sample: bool,
        temperature: float = 1.0,
    ) -> tuple[Tensor, list[Tensor]]:
        h = self.top_map.expand(n, -1, -1, -1)
        kls: list[Tensor] = []
        for j, group in enumerate(self.decoder):
            h, kl = group(h, None if feats is None else feats[j], sample, temperature)
            if kl is not None:
                kls.append(kl)
        return self.head(self.postprocess(h)), kls

    def _check(self, x: Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ConfigError(
                f"nvae: input of shape {list(x.shape)} but the model takes [B, {expected[0]}, "
                f"{expected[1]}, {expected[2]}] (nvae.in_channels and the image size it was "
                "built for)"
            )
