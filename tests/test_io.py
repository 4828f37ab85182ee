from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seglab.io import atomic_dir, atomic_file, write_json


def test_write_json_is_strict_json(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json(
        target, {"hd95": float("nan"), "x": [np.float32(0.5), float("inf")], "n": np.int64(3)}
    )
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"hd95": None, "x": [0.5, None], "n": 3}


def test_atomic_outputs_leave_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "f.json") as tmp:
            tmp.write_text("{")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_previous_output(tmp_path: Path) -> None:
    for content in ("old", "new"):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f.txt").write_text(content)
    assert (tmp_path / "out/f.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
