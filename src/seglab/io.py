"""Atomic outputs: write under a temporary name beside the target, rename at the end.

A crash or Ctrl-C therefore never leaves a half-written file or folder where a DVC
stage (or a user) would take it for a finished one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


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
