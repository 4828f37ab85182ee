"""dvc.yaml cannot miss a profile: a stage that reads a params section a profile overlays lists
that profile's overlay too (and ``profile``), so editing ``profiles.cpu...`` re-runs the stages it
changes under that profile, as editing the section itself does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: Each pipeline and the params file its stages read (relative to the repository root).
PIPELINES = {
    ROOT / "dvc.yaml": "params.yaml",
    ROOT / "pipelines" / "lgg" / "dvc.yaml": "pipelines/lgg/params.yaml",
}


def _leaves(tree: dict, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every value of a nested mapping."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path


def _covered(path: str, keys: list[str]) -> bool:
    """Whether one of the listed params ``keys`` is ``path`` or a section holding it."""
    return any(path == key or path.startswith(key + ".") for key in keys)


def _stage_keys(body: dict, params_file: str) -> list[str]:
    """The keys of ``params_file`` a stage lists (a bare key belongs to params.yaml)."""
    keys: list[str] = []
    for entry in body.get("params", []):
        if isinstance(entry, str):
            keys += [entry] if params_file == "params.yaml" else []
        else:
            keys += [k for file, ks in entry.items() if file == params_file for k in ks]
    return keys


def _cases() -> Iterator[tuple[str, list[str], str, list[str]]]:
    for dvc_file, params_file in PIPELINES.items():
        profiles = yaml.safe_load((ROOT / params_file).read_text()).get("profiles", {})
        for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
            keys = _stage_keys(stage.get("do", stage), params_file)
            stage_id = f"{dvc_file.relative_to(ROOT)}:{name}"
            for profile, overlay in profiles.items():
                read = [p for p in _leaves(overlay) if _covered(p, keys)]
                if read:
                    yield stage_id, keys, profile, read


@pytest.mark.parametrize(("stage", "keys", "profile", "read"), list(_cases()))
def test_a_stage_lists_every_profile_overlay_of_what_it_reads(
    stage: str, keys: list[str], profile: str, read: list[str]
) -> None:
    assert "profile" in keys, f"{stage}: reads {read[0]}, which profile {profile} overlays"
    missing = [p for p in read if not _covered(f"profiles.{profile}.{p}", keys)]
    assert missing == [], (
        f"{stage}: profile {profile} overlays {missing}; list profiles.{profile}..."
    )
