"""The four segmenters: shapes, sizes from params, and what tells them apart."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import TINY

from seglab.config import (
    ResUNetParams,
    SegmenterNetsParams,
    UNetParams,
)
from seglab.errors import ConfigError
from seglab.models.segmenters import ARCHS, build_segmenter, parameter_count, weights_mb


def test_the_four_architectures_are_known() -> None:
    assert ARCHS == ("unet", "resunet", "attunet", "swinunetr")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [128, 64])
def test_logits_have_one_channel_per_class_at_the_input_size(arch: str, size: int) -> None:
    net = build_segmenter(arch, TINY).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, size, size))
    assert out.shape == (2, 4, size, size)
    assert torch.isfinite(out).all()


def test_in_channels_and_classes_are_arguments() -> None:
    net = build_segmenter("unet", TINY, in_channels=3, num_classes=1).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)


def test_sizes_differ_by_architecture_and_follow_the_params() -> None:
    counts = {arch: parameter_count(build_segmenter(arch, TINY)) for arch in ARCHS}
    assert len(set(counts.values())) == 4, counts
    # Residual units add parameters to the same channel plan; wider channels add more.
    assert counts["resunet"] > counts["unet"]
    wider = SegmenterNetsParams(unet=UNetParams(channels=(8, 16, 32)))
    assert parameter_count(build_segmenter("unet", wider)) > counts["unet"]
    plain = build_segmenter("unet", TINY)
    first_conv = next(m for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.out_channels == 4


def test_study_sizes_are_the_defaults() -> None:
    nets = SegmenterNetsParams()
    assert nets.unet.channels == (64, 128, 256, 512, 1024)
    assert nets.resunet.residual_units == 2 and nets.unet.residual_units == 0
    # A ResUNet given only its channels keeps its two residual units per block.
    assert SegmenterNetsParams.model_validate({"resunet": {"channels": [4, 8]}}).resunet == (
        ResUNetParams(channels=(4, 8))
    )
    assert ResUNetParams(channels=(4, 8)).residual_units == 2


def test_weights_size_matches_the_parameter_count() -> None:
    net = build_segmenter("attunet", TINY)
    expected = parameter_count(net) * 4 / 2**20
    assert expected <= weights_mb(net) < expected * 1.5 + 0.05


def test_unknown_architecture_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown segmenter architecture 'vnet'"):
        build_segmenter("vnet", TINY)


def test_a_first_stride_of_one_keeps_a_full_resolution_level() -> None:
    """MONAI's UNet down-samples in its first convolution unless its first stride is 1."""
    halved = build_segmenter(
        "resunet", SegmenterNetsParams.model_validate({"resunet": {"channels": [6, 8, 16]}})
    )
    full = build_segmenter(
        "resunet",
        SegmenterNetsParams.model_validate(
            {"resunet": {"channels": [6, 8, 16], "strides": [1, 2]}}
        ),
    )
    sizes: dict[str, list[int]] = {"halved": [], "full": []}
    for name, net in (("halved", halved), ("full", full)):
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d) and not module.out_channels == 4:
                module.register_forward_hook(
                    lambda _m, _i, out, name=name: sizes[name].append(out.shape[-1])
                )
        assert net(torch.zeros(1, 1, 16, 16)).shape == (1, 4, 16, 16)
    assert max(sizes["halved"]) == 8 and max(sizes["full"]) == 16


def test_strides_need_one_value_per_level_after_the_first() -> None:
    with pytest.raises(ValueError, match="one value per level"):
        SegmenterNetsParams.model_validate({"unet": {"channels": [4, 8, 16], "strides": [1]}})


def test_swinunetr_v2_adds_a_residual_block_per_stage() -> None:
    """``use_v2`` is MONAI's SwinUNETR-V2: a convolution block before each Swin stage."""
    nets = SegmenterNetsParams.model_validate({"swinunetr": TINY.swinunetr.model_dump()})
    v2 = SegmenterNetsParams.model_validate(
        {"swinunetr": {**TINY.swinunetr.model_dump(), "use_v2": True}}
    )
    plain, wider = build_segmenter("swinunetr", nets), build_segmenter("swinunetr", v2)
    assert parameter_count(wider) > parameter_count(plain)
    assert wider.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 4, 64, 64)
