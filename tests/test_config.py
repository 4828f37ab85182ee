from __future__ import annotations

from pathlib import Path

import pytest

from seglab.config import BrainParams, CardiacParams, flatten, load_params
from seglab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_files_validate() -> None:
    cardiac = load_params(ROOT / "params.yaml", CardiacParams)
    assert cardiac.acdc.prepare.size == 128
    brain = load_params(ROOT / "pipelines/lgg/params.yaml", BrainParams)
    assert brain.lgg.raw


def test_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("acdc:\n  prepare:\n    sise: 64\n")
    with pytest.raises(ConfigError, match=r"params.yaml: acdc.prepare.sise: Extra inputs"):
        load_params(f, CardiacParams)


def test_bad_value_and_bad_yaml(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("acdc:\n  prepare:\n    crop: magic\n")
    with pytest.raises(ConfigError, match="acdc.prepare.crop"):
        load_params(f, CardiacParams)
    f.write_text("acdc: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(f, CardiacParams)
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml", CardiacParams)


def test_full_profile_overlays_the_quick_values(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text(
        "profile: full\nacdc:\n  prepare:\n    size: 64\n    fov_mm: 180\n"
        "profiles:\n  full:\n    acdc:\n      prepare:\n        size: 128\n"
    )
    params = load_params(f, CardiacParams)
    assert params.acdc.prepare.size == 128 and params.acdc.prepare.fov_mm == 180
    f.write_text("profile: full\n")
    with pytest.raises(ConfigError, match="profile 'full' has no entry"):
        load_params(f, CardiacParams)


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(CardiacParams())
    assert flat["acdc.prepare.split.seed"] == 42
    assert flat["tracking.uri"].startswith("sqlite:///")
