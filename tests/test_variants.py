"""The variant tables are the one place a segmenter architecture or an NVAE variant is named:
every name has its params section, its builder or registered name, and the CLI and DVC follow."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from tests.helpers import TINY

from seglab.cli import build_parser
from seglab.config import CardiacParams, CorrectorsParams, SegmenterNetsParams, load_params
from seglab.models.segmenters import ARCHS, BUILDERS, build_segmenter
from seglab.variants import CORRECTORS, GT, SEARCH_TARGETS

ROOT = Path(__file__).resolve().parents[1]


def choices(*path: str, option: str) -> list[str]:
    parser = build_parser()
    for name in path:
        parser = next(
            a
            for a in parser._actions
            if a.dest.endswith("command")  # noqa: SLF001
        ).choices[name]
    action = next(a for a in parser._actions if option in a.option_strings)  # noqa: SLF001
    return list(action.choices)


def test_every_architecture_has_sizes_and_a_builder() -> None:
    assert set(SegmenterNetsParams.model_fields) == set(BUILDERS) == set(ARCHS)
    for arch in ARCHS:
        net = build_segmenter(arch, TINY, in_channels=3).eval()
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_every_corrector_has_params_and_the_cli_and_search_follow() -> None:
    params = CorrectorsParams()
    for name, variant in CORRECTORS.items():
        assert getattr(params, name).model.in_channels == variant.in_channels
        assert variant.registered.startswith("acdc-nvae")
    assert choices("train", "corrector", option="--variant") == list(CORRECTORS)
    assert choices("search", "nvae", option="--target") == list(SEARCH_TARGETS)
    assert SEARCH_TARGETS["gt"] is GT
    assert len({v.registered for v in SEARCH_TARGETS.values()}) == len(SEARCH_TARGETS)


def test_the_pipeline_trains_every_listed_variant() -> None:
    params = load_params(ROOT / "params.yaml", CardiacParams)
    assert set(params.correctors.variants) == set(CORRECTORS)
    assert set(params.segmenters.archs) == set(ARCHS)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["train_corrector"]["foreach"] == "${correctors.variants}"
    assert stages["train_segmenter"]["foreach"] == "${segmenters.archs}"
    for variant in CORRECTORS.values():
        assert variant.folder(params) in (params.acdcseg.out, params.acdcseg.trigram)
