"""Lineage facts checked against git and DVC themselves, in throwaway repositories."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
from pathlib import Path

import pytest
import yaml
from tests.helpers import dvc, git

from seglab.errors import DataError
from seglab.tracking import lineage


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep git from finding an enclosing repository and DVC's state db out of /var/tmp."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site-cache"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("profile: quick\n")
    git(root, "init", "-q")
    git(root, "add", "params.yaml")
    git(root, "commit", "-q", "-m", "init")
    return root


def write_dataset(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha\n")
    (folder / "sub" / "b.txt").write_bytes(b"beta\r\n")  # DVC 3 hashes bytes as they are
    (folder / "sub" / "c.bin").write_bytes(bytes(range(256)) * 64)
    return folder


def no_computing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any fallback to hashing fail, so a test proves a recorded hash was used."""

    def refuse(path: Path, root: Path) -> str:
        raise AssertionError(f"{path} was hashed although DVC recorded it")

    monkeypatch.setattr(lineage, "_computed_md5", refuse)


def test_git_commit_and_dirty_follow_the_repository(project: Path) -> None:
    assert lineage.git_commit(project) == git(project, "rev-parse", "HEAD")
    assert lineage.git_dirty(project) is False
    (project / "notes.txt").write_text("untracked files do not make the tree dirty\n")
    assert lineage.git_dirty(project) is False
    (project / "params.yaml").write_text("profile: full\n")
    assert lineage.git_dirty(project) is True


def test_outputs_a_pipeline_rewrites_do_not_make_the_tree_dirty(project: Path) -> None:
    (project / "metrics").mkdir()
    (project / "metrics" / "m.json").write_text("{}\n")
    (project / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  s:\n    cmd: x\n    outs:\n    - path: metrics\n"
    )
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "outputs")
    (project / "metrics" / "m.json").write_text('{"dice": 0.9}\n')
    (project / "dvc.lock").write_text((project / "dvc.lock").read_text() + "# rewritten\n")
    assert lineage.dirty_files(project) == [] and lineage.git_dirty(project) is False
    assert lineage.lineage_tags(project, {}, None)["git.dirty"] == "false"
    (project / "params.yaml").write_text("profile: full\n")
    assert lineage.dirty_files(project) == ["params.yaml"]
    tags = lineage.lineage_tags(project, {}, None)
    assert tags["git.dirty"] == "true" and tags["git.dirty_files"] == "params.yaml"


def test_outside_git_gives_unknown_not_a_crash(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert lineage.git_commit(plain) is None
    assert lineage.git_dirty(plain) is None
    tags = lineage.lineage_tags(plain, {}, None)
    assert tags["git.commit"] == "unknown"
    assert tags["git.dirty"] == "unknown"
    assert "mlflow.source.git.commit" not in tags


def test_code_tags_name_the_checkout_tracking_the_package(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    package = checkout / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (checkout / "params.yaml").write_text("profile: quick\n")
    git(checkout, "init", "-q")
    git(checkout, "add", ".")
    git(checkout, "commit", "-q", "-m", "code")
    head = git(checkout, "rev-parse", "HEAD")
    assert lineage.code_tags(package) == {"seglab.git.commit": head, "seglab.git.dirty": "false"}
    (checkout / "params.yaml").write_text("profile: cpu\n")  # the project's, not the code's
    assert lineage.code_tags(package)["seglab.git.dirty"] == "false"
    (package / "__init__.py").write_text("x = 2\n")
    assert lineage.code_tags(package)["seglab.git.dirty"] == "true"
    # A wheel installed in a virtual environment inside a repository: untracked, not its code.
    installed = checkout / ".venv" / "site-packages" / "pkg"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("x = 1\n")
    assert lineage.code_tags(installed) == {}
    assert lineage.code_tags(tmp_path) == {}  # outside git


def test_a_project_that_is_the_code_checkout_takes_its_git_status_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"
    package = checkout / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (checkout / "sub").mkdir()
    (checkout / "sub" / "params.yaml").write_text("profile: quick\n")
    git(checkout, "init", "-q")
    git(checkout, "add", ".")
    git(checkout, "commit", "-q", "-m", "code")
    (package / "__init__.py").write_text("x = 2\n")
    scanned: list[Path] = []
    listed = lineage.dirty_files
    monkeypatch.setattr(lineage, "dirty_files", lambda root: scanned.append(root) or listed(root))
    monkeypatch.setattr(lineage, "PACKAGE", package)
    tags = lineage.lineage_tags(checkout, {}, None)
    assert scanned == [checkout]
    assert tags["git.dirty"] == tags["seglab.git.dirty"] == "true"
    # A project in a sub-folder sees other dvc.lock files: the checkout is listed on its own.
    scanned.clear()
    assert lineage.lineage_tags(checkout / "sub", {}, None)["seglab.git.dirty"] == "true"
    assert scanned == [checkout / "sub", checkout.resolve()]


def test_a_project_outside_git_still_names_the_code_that_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = {"seglab.git.commit": "0" * 40, "seglab.git.dirty": "false"}
    monkeypatch.setattr(lineage, "code_tags", lambda *_, **__: code)
    plain = tmp_path / "plain"
    plain.mkdir()
    tags = lineage.lineage_tags(plain, {}, None)
    assert tags["git.commit"] == "unknown" and tags.items() >= code.items()


def test_repository_without_commits_has_no_commit(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert lineage.git_commit(tmp_path) is None
    assert lineage.git_dirty(tmp_path) is False


def test_dvc_hash_equals_dvc_add(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dvc(project, "init", "-q")
    folder = write_dataset(project / "data" / "ds")
    single = project / "data" / "single.bin"
    single.write_bytes(b"\x00\x01 not text \r\n")
    computed = (lineage.dvc_hash(folder, project), lineage.dvc_hash(single, project))

    dvc(project, "add", "-q", "data/ds", "data/single.bin")
    recorded = tuple(
        yaml.safe_load((project / "data" / f"{name}.dvc").read_text())["outs"][0]["md5"]
        for name in ("ds", "single.bin")
    )
    assert recorded[0].endswith(".dir")
    assert computed == recorded

    no_computing(monkeypatch)
    assert lineage.dvc_hash(Path("data/ds"), project) == recorded[0]  # relative to the root
    assert lineage.dvc_hash(single, project) == recorded[1]


def test_dvc_hash_reads_dvc_lock_with_wdir_and_external_dep(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc(project, "init", "-q")
    write_dataset(project / "work" / "inputs")
    external = write_dataset(tmp_path / "raw-elsewhere")
    stages = {
        "stages": {
            "copy": {
                "wdir": "work",
                "cmd": f"cp -r inputs produced && ls {external} > /dev/null",
                "deps": ["inputs", str(external)],
                "outs": ["produced"],
            }
        }
    }
    (project / "dvc.yaml").write_text(yaml.safe_dump(stages))
    dvc(project, "repro", "-q")
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["copy"]
    by_path = {entry["path"]: entry["md5"] for entry in [*lock["deps"], *lock["outs"]]}

    no_computing(monkeypatch)
    assert lineage.dvc_hash(project / "work" / "produced", project) == by_path["produced"]
    assert lineage.dvc_hash(external, project) == by_path[str(external)]


def test_changed_data_is_rehashed_not_taken_from_a_stale_record(
    project: Path, tmp_path: Path
) -> None:
    dvc(project, "init", "-q")
    folder = write_dataset(project / "data" / "ds")
    dvc(project, "add", "-q", "data/ds")
    dvcfile = project / "data" / "ds.dvc"
    before = yaml.safe_load(dvcfile.read_text())["outs"][0]["md5"]

    changed = folder / "a.txt"
    changed.write_text("ALPHA\n")  # same size and file count: only the mtime betrays it
    later = dvcfile.stat().st_mtime + 10
    os.utime(changed, (later, later))
    now = lineage.dvc_hash(folder, project)
    assert now != before

    copy = shutil.copytree(folder, tmp_path / "copy-outside-any-repo")
    assert lineage.dvc_hash(copy, tmp_path) == now  # the no-repo path hashes the same way
    dvc(project, "add", "-q", "data/ds")
    assert yaml.safe_load(dvcfile.read_text())["outs"][0]["md5"] == now


def test_missing_dataset(project: Path) -> None:
    assert lineage.dvc_hash(project / "absent", project) is None
    with pytest.raises(DataError, match="absent: input dataset 'acdc' not found"):
        lineage.lineage_tags(project, {"acdc": Path("absent")}, None)


def test_params_hash_and_versions(project: Path, tmp_path: Path) -> None:
    params = project / "params.yaml"
    assert lineage.params_hash(params) == hashlib.sha256(params.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="missing.yaml: cannot read params file"):
        lineage.params_hash(tmp_path / "missing.yaml")

    versions = lineage.package_versions()
    import dvc as dvc_pkg
    import mlflow

    assert versions["mlflow"] == mlflow.__version__
    assert versions["dvc"] == dvc_pkg.__version__
    assert versions["python"] == platform.python_version()
    assert {"torch", "lightning", "monai", "torchio", "nibabel", "optuna", "seglab"} <= set(
        versions
    )


def test_lineage_tags_name_everything(project: Path) -> None:
    write_dataset(project / "data" / "ds")
    tags = lineage.lineage_tags(project, {"ds": Path("data/ds")}, project / "params.yaml")
    head = git(project, "rev-parse", "HEAD")
    assert tags["git.commit"] == tags["mlflow.source.git.commit"] == head
    assert tags["git.dirty"] == "false"
    assert tags["data.ds.path"] == str((project / "data" / "ds").resolve())
    assert tags["data.ds.dvc_md5"] == lineage.dvc_hash(project / "data" / "ds", project)
    assert tags["params.sha256"] == lineage.params_hash(project / "params.yaml")
    assert tags["version.python"] == platform.python_version()
    assert all(isinstance(value, str) for value in tags.values())
