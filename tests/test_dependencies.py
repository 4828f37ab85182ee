"""pyproject's floors: no lower than what the code needs, and the lowest allowed set resolves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

#: The oldest release of each dependency that has what the code uses, and what that is.
CODE_NEEDS = {
    "mlflow": ("3.5", "log_model(name=...) (3.0), `mlflow server --allowed-hosts` (3.5)"),
    "optuna": ("4.9", "RetryHeartbeatStaleTrialCallback, get_heartbeat_stale_trial_callback"),
    "dvc": ("3.50", "the dvc-data hashing tracking.lineage reproduces"),
}


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["dependencies"])}


def floor(requirement: Requirement) -> Version | None:
    lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
    return max(lows, default=None)


@pytest.mark.parametrize("name", sorted(CODE_NEEDS))
def test_floors_allow_no_version_the_code_cannot_run_on(name: str) -> None:
    needed, why = CODE_NEEDS[name]
    low = floor(requirements()[name])
    assert low is not None and low >= Version(needed), f"{name}>={needed} needed for {why}"


def uv_command() -> list[str] | None:
    """uv as `uv run` passes it on (UV), else on PATH, else as a module of this interpreter."""
    for candidate in (os.environ.get("UV"), shutil.which("uv")):
        if candidate:
            return [candidate]
    done = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    return [sys.executable, "-m", "uv"] if done.returncode == 0 else None


@pytest.mark.slow
def test_the_lowest_allowed_versions_resolve(tmp_path: Path) -> None:
    """A dry resolve of the lowest allowed direct dependencies (nothing is installed; torch is
    only resolved, not downloaded): the floors are consistent with each other, and those the
    code needs are what the resolver picks (others may be lifted by a dependency: pydantic
    2.6 -> 2.11.7 today)."""
    uv = uv_command()
    if uv is None:
        pytest.skip("uv not found")
    out = tmp_path / "lowest.txt"
    done = subprocess.run(
        [*uv, "pip", "compile", str(ROOT / "pyproject.toml"), "--resolution", "lowest-direct",
         "--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28",
         "--no-header", "--quiet", "-o", str(out)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0 and "No solution found" not in done.stderr:
        pytest.skip(f"package index not reachable: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr
    pinned = {
        name.strip().lower(): Version(version.split(";")[0].strip())
        for name, sep, version in (line.partition("==") for line in out.read_text().splitlines())
        if sep
    }
    for name, requirement in requirements().items():
        assert requirement.specifier.contains(pinned[name.lower()]), (name, pinned[name.lower()])
    for name in CODE_NEEDS:  # the floor the code needs is a version the resolver can pick
        assert pinned[name] == floor(requirements()[name]), (name, pinned[name])
