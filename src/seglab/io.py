"""Atomic outputs: write under a temporary name beside the target, rename at the end.

A crash or Ctrl-C therefore never leaves a half-written file or folder where a DVC
stage (or a user) would take it for a finished one. :func:`refuse_overwriting_inputs` is the
check every command runs before it writes: no output may be one of its inputs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from itertools import combinations
from pathlib import Path
from typing import Any

from seglab.errors import SeglabError

PathLike = str | os.PathLike[str]


def refuse_overwriting_inputs(
    outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None]
) -> None:
    """Raise :class:`SeglabError`, one line naming both, if writing an output would destroy an
    input or another output.

    ``outputs`` and ``inputs`` map how the user named each path (``-o``, ``SEG``,
    ``acdc.raw``...) to the path; ``None`` entries are skipped. An output clashes with an input
    when it is the same file: the same path, or a symlink or hard link to it (compared with
    :func:`os.path.samefile` where both exist, else by their resolved paths), or when it is a
    folder that holds the input (an output folder is replaced whole). Two outputs clash when they
    are the same file (the second would replace the first).
    """
    outs = [(name, Path(path)) for name, path in outputs.items() if path is not None]
    ins = [(name, Path(path)) for name, path in inputs.items() if path is not None]
    for out_name, out in outs:
        for in_name, source in ins:
            if _same_file(out, source):
                raise SeglabError(
                    f"{out_name} {out} is the input {in_name} {source}: writing it would "
                    "overwrite the input; choose another output path"
                )
            if _inside(source, out):
                raise SeglabError(
                    f"{out_name} {out} holds the input {in_name} {source}: replacing it would "
                    "delete the input; choose another output path"
                )
    for (name_a, a), (name_b, b) in combinations(outs, 2):
        if _same_file(a, b):
            raise SeglabError(
                f"{name_a} {a} and {name_b} {b} are the same file: one output would overwrite "
                "the other; choose two paths"
            )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they lead
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies strictly below ``folder`` (symlinks resolved)."""
    inner, outer = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return inner != outer and inner.is_relative_to(outer)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if target.exists() or target.is_symlink():
            target.unlink()
        tmp.rename(target)


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path (same suffix), renamed onto ``target`` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.tmp-", suffix=target.suffix, dir=target.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def write_json(target: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented, strict JSON, atomically.

    NaN and infinities (an undefined HD95, say) become ``null``: Python would otherwise write
    ``NaN``, which is not JSON and breaks ``dvc metrics`` and other readers.
    """
    with atomic_file(target) as tmp:
        text = json.dumps(_finite(payload), indent=2, default=str, allow_nan=False)
        tmp.write_text(text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return _finite(value.item())
    return value


def comparable(record: Any) -> Any:
    """The figures of a record worth comparing between runs: numbers (nested mappings kept),
    without text (run ids, names, versions), flags, lists and timings (any key naming seconds:
    they change on every run). ``dvc metrics diff`` and ``dvc exp show`` then show what a change
    moved.

    >>> comparable({"dice_mean": 0.9, "train_seconds": 61.2, "run_id": "ab", "emptied": 2,
    ...             "crossfit": {"dice_mean": 0.8, "method": "insample"}, "valid": True})
    {'dice_mean': 0.9, 'emptied': 2, 'crossfit': {'dice_mean': 0.8}}
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if "second" in key:
            continue
        if isinstance(value, dict):
            inner = comparable(value)
            if inner:
                out[key] = inner
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
        elif hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            out[key] = value.item()
    return out


def metrics_path(record: str | Path) -> Path:
    """Where a record's comparable figures go: ``x.json`` -> ``x.metrics.json``."""
    record = Path(record)
    return record.with_name(record.name.removesuffix(".json") + ".metrics.json")


def write_record(target: str | Path, record: Any) -> None:
    """Write a stage's whole record (figures, timings, ids) to ``target`` and its comparable
    figures (:func:`comparable`) beside it (:func:`metrics_path`): the DVC metrics file."""
    write_json(target, record)
    write_json(metrics_path(target), comparable(_finite(record)))
