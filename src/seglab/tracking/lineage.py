"""Where a run came from: git commit and dirty flag (of the project and of seglab's own
checkout), DVC data hashes, params hash, package versions.

Every MLflow run carries these as tags (see :func:`lineage_tags`), so any number in the tracking
UI can be traced back to the code, data and parameters that produced it.

DVC hashes are the ones DVC itself uses, so a tag can be matched against ``dvc.lock``, a ``.dvc``
file or the DVC cache:

1. If DVC has *recorded* a hash for the path (an output or dependency in a ``dvc.lock``, or the
   output of a ``<path>.dvc`` file), and the path still matches that record (same size and file
   count, nothing modified after the record was written), the recorded hash is used: no hashing.
2. Otherwise the hash is computed with DVC's own builder (``dvc_data.hashfile.build``, the call
   ``dvc add`` and ``dvc repro`` make). Inside a DVC repository this goes through DVC's state
   database, which caches each file's md5 by inode, mtime and size, so an unchanged 100 MB
   dataset is read once, not on every run. Outside a DVC repository there is no state database
   and the path is hashed in full each time.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from seglab.errors import DataError

PACKAGES = (
    "torch",
    "lightning",
    "monai",
    "torchio",
    "nibabel",
    "mlflow",
    "optuna",
    "dvc",
    "seglab",
)


#: seglab's own source folder: the code behind every figure a run logs.
PACKAGE = Path(__file__).resolve().parents[1]


def _git(root: Path, *args: str) -> str | None:
    """Output of a git command run in ``root``; None when git or the repository is missing."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def git_commit(root: Path) -> str | None:
    """The HEAD commit of the repository holding ``root``; None outside git or before a commit."""
    out = _git(root, "rev-parse", "--verify", "HEAD")
    return out.strip() if out else None


def _dvc_outputs(root: Path) -> list[Path]:
    """Every lockfile and every output it records: files a ``dvc repro`` rewrites as it goes."""
    outs: list[Path] = []
    for lockfile in _lockfiles(root):
        outs.append(lockfile.resolve())
        wdirs = _stage_wdirs(lockfile)
        for name, stage in ((_load_yaml(lockfile) or {}).get("stages") or {}).items():
            base = lockfile.parent / wdirs.get(name.split("@")[0], ".")
            outs.extend(_resolve(e["path"], base) for e in stage.get("outs") or [] if "path" in e)
    return outs


def dirty_files(root: Path) -> list[str] | None:
    """Tracked files that differ from HEAD, other than the DVC outputs (and dvc.lock) a pipeline
    run rewrites: the source and params a result may not match its commit by. Untracked files
    do not count, as in ``git describe --dirty``. None outside a git repository."""
    out = _git(root, "status", "--porcelain", "--untracked-files=no", "-z")
    top = _git(root, "rev-parse", "--show-toplevel")
    if out is None or top is None:
        return None
    # -z: "XY path" entries; a rename adds its source as the next entry.
    entries = out.split("\0")
    changed: list[str] = []
    skip = False
    for entry in entries:
        if skip or not entry:
            skip = False
            continue
        changed.append(entry[3:])
        skip = entry[0] in "RC"
    outputs = _dvc_outputs(Path(root).resolve())
    base = Path(top.strip())
    return [
        name
        for name in changed
        if not any((base / name).resolve().is_relative_to(o) for o in outputs)
    ]


def git_dirty(root: Path) -> bool | None:
    """Whether source or params differ from HEAD (see :func:`dirty_files`); None outside git."""
    files = dirty_files(root)
    return None if files is None else bool(files)


def params_hash(path: Path) -> str:
    """sha256 of the params file's bytes: the exact file a run was configured from."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise DataError(path, f"cannot read params file ({exc.strerror})") from exc


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on (absent ones are left out)."""
    versions: dict[str, str] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


def _resolve(path: Path | str, base: Path) -> Path:
    return (base / Path(path)).resolve()


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(path, f"cannot read DVC file ({exc})") from exc


def _lockfiles(root: Path) -> list[Path]:
    """Every dvc.lock of the project (git-tracked or not yet added, never git-ignored ones)."""
    out = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "*dvc.lock")
    if out is None:
        found = [root / "dvc.lock"]
    else:
        found = [root / name for name in out.split("\0") if Path(name).name == "dvc.lock"]
    return sorted({p for p in found if p.is_file()})


def _stage_wdirs(lockfile: Path) -> dict[str, str]:
    """Stage name -> wdir from the dvc.yaml beside a lockfile (lockfile paths are wdir-relative)."""
    dvc_yaml = lockfile.with_name("dvc.yaml")
    spec = _load_yaml(dvc_yaml) if dvc_yaml.is_file() else None
    stages = spec.get("stages", {}) if isinstance(spec, dict) else {}
    return {name: str(stage.get("wdir", ".")) for name, stage in stages.items() if stage}


def _records(path: Path, root: Path) -> Iterator[tuple[dict[str, Any], Path]]:
    """DVC's records (entry, file it is written in) for ``path``: ``<path>.dvc``, then dvc.lock."""
    dvcfile = path.with_name(path.name + ".dvc")
    if dvcfile.is_file():
        spec = _load_yaml(dvcfile) or {}
        base = dvcfile.parent / str(spec.get("wdir", "."))
        for entry in spec.get("outs") or []:
            if "path" in entry and _resolve(entry["path"], base) == path:
                yield entry, dvcfile
    for lockfile in _lockfiles(root):
        lock = _load_yaml(lockfile) or {}
        wdirs = _stage_wdirs(lockfile)
        for name, stage in (lock.get("stages") or {}).items():
            base = lockfile.parent / wdirs.get(name.split("@")[0], ".")
            for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
                if "path" in entry and _resolve(entry["path"], base) == path:
                    yield entry, lockfile


def _matches(path: Path, entry: Mapping[str, Any], written: float) -> bool:
    """Whether ``path`` is still what the record describes: same size and file count, and no file
    modified after the record was written. Costs a stat per file, never a read."""
    files = (
        [Path(d, f) for d, _, names in os.walk(path) for f in names] if path.is_dir() else [path]
    )
    stats = [f.stat() for f in files]
    if entry.get("size") is not None and entry["size"] != sum(s.st_size for s in stats):
        return False
    if entry.get("nfiles") is not None and entry["nfiles"] != len(stats):
        return False
    return all(s.st_mtime <= written for s in stats)


def _recorded_md5(path: Path, root: Path) -> str | None:
    """The md5 DVC recorded for ``path``, if exactly one still-valid value is recorded."""
    values = {
        str(entry["md5"])
        for entry, record in _records(path, root)
        if entry.get("md5") and _matches(path, entry, record.stat().st_mtime)
    }
    return values.pop() if len(values) == 1 else None


def _computed_md5(path: Path, root: Path) -> str:
    """Hash ``path`` as ``dvc add`` would, through the repo's state cache when there is one."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo
    from dvc_data.hashfile.build import IgnoreInCollectedDirError, build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem, MemoryFileSystem

    try:
        try:
            with Repo(str(root)) as repo:
                odb = repo.cache.local
                _, _, obj = build(
                    odb, str(path), odb.fs, "md5", ignore=repo.dvcignore, dry_run=True
                )
        except NotDvcRepoError:
            odb = HashFileDB(MemoryFileSystem(), "memory://seglab-dvc-hash", hash_name="md5")
            _, _, obj = build(odb, str(path), LocalFileSystem(), "md5", dry_run=True)
    except (DvcException, IgnoreInCollectedDirError, OSError) as exc:
        raise DataError(path, f"cannot compute its DVC hash ({exc})") from exc
    assert obj.hash_info.value is not None
    return obj.hash_info.value


def dvc_hash(path: Path, root: Path) -> str | None:
    """DVC's md5 of a dataset file or folder (``<md5>.dir`` for folders); None if it is missing.

    A relative ``path`` is taken relative to ``root`` (the project, a DVC repository or not).
    """
    path = _resolve(path, Path(root))
    if not path.exists():
        return None
    return _recorded_md5(path, Path(root).resolve()) or _computed_md5(path, Path(root).resolve())


def _dirty_tag(files: list[str] | None) -> str:
    return "unknown" if files is None else str(bool(files)).lower()


def code_tags(
    package: Path = PACKAGE, known: Mapping[Path, list[str] | None] | None = None
) -> dict[str, str]:
    """``seglab.git.commit`` of the checkout tracking ``package`` (an editable install or a source
    tree on PYTHONPATH) and ``seglab.git.dirty``: whether the package's own files differ from it.
    So the code that ran is known even when the project folder is not a git repository. Empty
    for an installed wheel, whose files no repository tracks (``version.seglab`` names it).
    ``known``: :func:`dirty_files` already listed for a checkout's top folder, not listed again."""
    package = Path(package).resolve()
    top = _git(package, "rev-parse", "--show-toplevel")
    if top is None or _git(package, "ls-files", "--error-unmatch", "--", "__init__.py") is None:
        return {}
    checkout = Path(top.strip()).resolve()
    changed = known[checkout] if known and checkout in known else dirty_files(checkout)
    source = package.relative_to(checkout)
    dirty = None if changed is None else [f for f in changed if Path(f).is_relative_to(source)]
    return {
        "seglab.git.commit": git_commit(checkout) or "unknown",
        "seglab.git.dirty": _dirty_tag(dirty),
    }


def lineage_tags(
    root: Path, datasets: Mapping[str, Path], params_file: Path | None
) -> dict[str, str]:
    """The tags every run carries; a missing input dataset is an error, not an 'unknown' tag.

    ``git.*`` describe the project folder, ``seglab.git.*`` the checkout seglab itself was
    imported from (the same repository when the project is a seglab checkout; absent for a wheel,
    which ``version.seglab`` names)."""
    root = Path(root)
    commit = git_commit(root)
    dirty = dirty_files(root)
    tags = {"git.commit": commit or "unknown", "git.dirty": _dirty_tag(dirty)}
    if dirty:
        listed = ", ".join(dirty)
        tags["git.dirty_files"] = listed if len(listed) <= 480 else listed[:477] + "..."
    if commit:
        tags["mlflow.source.git.commit"] = commit
    # Usually the project is the seglab checkout itself: its git status is not taken twice.
    tags.update(code_tags(PACKAGE, known={root.resolve(): dirty}))
    for name, path in datasets.items():
        resolved = _resolve(path, root)
        md5 = dvc_hash(resolved, root)
        if md5 is None:
            raise DataError(resolved, f"input dataset '{name}' not found")
        tags[f"data.{name}.path"] = str(resolved)
        tags[f"data.{name}.dvc_md5"] = md5
    if params_file is not None:
        tags["params.sha256"] = params_hash(_resolve(params_file, root))
    tags.update({f"version.{name}": version for name, version in package_versions().items()})
    return tags
