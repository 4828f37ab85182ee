"""The package's floors (README, "Layout"): every import runs down, never up or sideways into a
stage, whatever the import's place (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "seglab"
#: Each unit's floor: a unit may import its own floor's and lower floors' units only.
FLOORS = {
    "errors": 1, "quiet": 1, "variants": 1,
    "io": 2, "config": 2,
    "data": 3, "models": 3, "tracking": 3, "search": 3,
    "metrics": 4, "training": 4,
    "inference": 5,
    "evaluation": 6,
    "stages": 7,
    "cli": 8,
}  # fmt: skip
#: What stage modules share; a stage imports these, never another stage.
STAGE_SHARED = {"seglab.stages.common", "seglab.stages.artifacts"}


def _imports(path: Path) -> list[str]:
    """Every ``seglab.*`` module ``path`` imports, at any depth of the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] if node.module.startswith("seglab") else []
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("seglab")]
    return out


def _unit(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_floor() -> None:
    units = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _sources()}
    assert units - {"__init__"} == set(FLOORS)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down(path: Path) -> None:
    unit = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if unit == "__init__":
        return
    up = [m for m in _imports(path) if FLOORS.get(_unit(m), 0) > FLOORS[unit]]
    assert not up, f"{path.relative_to(ROOT)} imports a higher floor: {up}"


def test_only_the_cli_imports_stages_and_no_stage_another() -> None:
    offenders = []
    for path in [*_sources(), *sorted((ROOT / "benchmarks").rglob("*.py"))]:
        rel = path.relative_to(ROOT)
        in_stages = rel.parts[:3] == ("src", "seglab", "stages")
        for module in _imports(path):
            if not module.startswith("seglab.stages"):
                continue
            if rel == Path("src/seglab/cli.py"):
                continue
            if in_stages and (module in STAGE_SHARED or module == "seglab.stages"):
                continue
            offenders.append(f"{rel} -> {module}")
    assert not offenders
