"""The brain study's smp networks: shapes, sizes, and local encoder weights (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from seglab.config import LGG_ARCHS, split_arch_name
from seglab.errors import ConfigError
from seglab.models.lgg import DECODERS, build_lgg_net, load_encoder_weights
from seglab.models.segmenters import parameter_count


def test_the_comparison_is_the_issue_s_six_architectures() -> None:
    assert LGG_ARCHS == (
        "unet-resnet18",
        "linknet-resnet18",
        "fpn-resnet18",
        "pspnet-resnet18",
        "deeplabv3-resnet18",
        "unet-resnet101",
    )
    assert {split_arch_name(n)[0] for n in LGG_ARCHS} == set(DECODERS)


@pytest.mark.parametrize("name", LGG_ARCHS)
def test_one_logit_map_at_the_input_size_from_three_channels(name: str) -> None:
    torch.manual_seed(0)
    net = build_lgg_net(name).eval()
    with torch.no_grad():
        for size in (64, 128):
            out = net(torch.rand(2, 3, size, size))
            assert out.shape == (2, 1, size, size), (name, size)
            assert torch.isfinite(out).all()


def test_a_batch_of_one_trains_except_where_batch_norm_pools_to_one_pixel() -> None:
    """Why the stage drops a lone last training batch: DeepLabV3's ASPP pooling cannot train on
    it, the other decoders can."""
    build_lgg_net("unet-resnet18").train()(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        build_lgg_net("deeplabv3-resnet18").train()(torch.rand(1, 3, 64, 64))


def test_sizes_differ_and_the_bigger_encoder_is_bigger() -> None:
    counts = {name: parameter_count(build_lgg_net(name)) for name in LGG_ARCHS}
    assert len(set(counts.values())) == len(LGG_ARCHS), counts
    assert counts["unet-resnet101"] > 3 * counts["unet-resnet18"]
    # ResNet-18 alone has 11.2 M parameters (without its classifier): every decoder adds some.
    assert all(count > 11_000_000 for count in counts.values())


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("unet", "<decoder>-<encoder>"),
        ("segformer-resnet18", "decoder among"),
        ("unet-", "<decoder>-<encoder>"),
        ("unet-resnet7", "unknown encoder 'resnet7'"),
    ],
)
def test_bad_names_are_config_errors(name: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_lgg_net(name)


def _encoder_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_lgg_net(name).encoder.state_dict().items()}


def test_a_local_pth_initialises_the_encoder_torchvision_classifier_keys_included(
    tmp_path: Path,
) -> None:
    state = _encoder_state("unet-resnet18", seed=1)
    # A torchvision ResNet file also holds its ImageNet classifier: smp drops those keys.
    torchvision_like = {**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "resnet18-local.pth"
    torch.save(torchvision_like, path)
    torch.manual_seed(2)
    net = build_lgg_net("fpn-resnet18", weights_file=path)
    loaded = net.encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    torch.manual_seed(2)
    random = build_lgg_net("fpn-resnet18").encoder.state_dict()
    assert not torch.equal(random["conv1.weight"], loaded["conv1.weight"])


def test_smp_hub_safetensors_files_load_too(tmp_path: Path) -> None:
    state = _encoder_state("unet-resnet18", seed=3)
    path = tmp_path / "model.safetensors"
    save_file(state, path)
    net = build_lgg_net("linknet-resnet18", weights_file=path)
    assert torch.equal(
        net.encoder.state_dict()["layer4.1.bn2.weight"], state["layer4.1.bn2.weight"]
    )


def test_a_missing_weights_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "weights" / "resnet18.pth"
    with pytest.raises(ConfigError, match=f"^{path}: encoder weights file not found$"):
        build_lgg_net("unet-resnet18", weights_file=path)


def test_weights_of_another_encoder_are_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(_encoder_state("unet-resnet18", seed=0), path)
    with pytest.raises(ConfigError, match=f"^{path}: does not fit the ResNetEncoder encoder"):
        build_lgg_net("unet-resnet101", weights_file=path)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"not a checkpoint", "not a readable weights file"), (None, "expected a state_dict")],
)
def test_unreadable_or_odd_weights_files_are_errors(
    tmp_path: Path, content: bytes | None, match: str
) -> None:
    path = tmp_path / "weights.pt"
    if content is None:
        torch.save({"state": [1, 2, 3]}, path)
    else:
        path.write_bytes(content)
    net = build_lgg_net("pspnet-resnet18")
    with pytest.raises(ConfigError, match=f"^{path}: {match}"):
        load_encoder_weights(net, path)
