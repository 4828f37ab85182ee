"""The data stages of both DVC pipelines on small phantoms, in a throw-away copy of the project.

Versioning is what is tested here (idempotent repro, push/pull); the training stages have their
own tests, and the whole main job is `dvc repro --all-pipelines` (README).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("prepare_acdc", "pipelines/lgg/dvc.yaml:prepare_lgg")

pytestmark = pytest.mark.slow


def _run(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _set(params_file: Path, dotted: str, value: object) -> None:
    params = yaml.safe_load(params_file.read_text())
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC copy of the project's pipeline files with small phantoms."""
    proj = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", "pipelines", "src", ".dvc", ".dvcignore", ".gitignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src,
                proj / name,
                ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp", "dvc.lock"),
            )
        elif src.exists():
            shutil.copy(src, proj / name)
    _set(proj / "params.yaml", "acdc.phantom.patients", 5)
    # One patient per group fills no val or test split (prepare refuses a split left empty).
    _set(proj / "params.yaml", "acdc.prepare.split.val", 0.0)
    _set(proj / "params.yaml", "acdc.prepare.split.test", 0.0)
    _set(proj / "pipelines/lgg/params.yaml", "lgg.phantom.patients", 3)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
        cwd=proj,
        check=True,
    )
    return proj


def test_repro_twice_runs_nothing_the_second_time(project: Path) -> None:
    first = _run(project, "dvc", "repro", *DATA_STAGES)
    assert "Running stage 'prepare_acdc'" in first
    assert "Running stage 'pipelines/lgg/dvc.yaml:prepare_lgg'" in first
    for split in ("train", "val", "test"):
        assert (project / "data/prepared/acdc" / f"{split}.npz").is_file()
        assert (project / "data/prepared/lgg" / f"{split}.npz").is_file()
    second = _run(project, "dvc", "repro", *DATA_STAGES)
    assert "Running stage" not in second
    status = _run(project, "dvc", "status", *DATA_STAGES)
    assert "up to date" in status


def test_push_then_pull_into_an_empty_cache_restores_the_data(project: Path) -> None:
    if not (project / "dvc.lock").is_file():
        _run(project, "dvc", "repro", *DATA_STAGES)
    before = _tree_hashes(project / "data")
    _run(project, "dvc", "push", "--with-deps", *DATA_STAGES)
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    _run(project, "dvc", "pull", "--with-deps", *DATA_STAGES)
    assert _tree_hashes(project / "data") == before
    assert "Running stage" not in _run(project, "dvc", "repro", *DATA_STAGES)
