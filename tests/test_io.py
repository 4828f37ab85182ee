from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from seglab.errors import SeglabError
from seglab.io import (
    atomic_dir,
    atomic_file,
    metrics_path,
    refuse_overwriting_inputs,
    write_json,
    write_record,
)


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


def test_an_output_that_is_an_input_is_refused_naming_both(tmp_path: Path) -> None:
    seg = tmp_path / "seg.nii.gz"
    seg.write_bytes(b"labels")
    (tmp_path / "link.nii.gz").symlink_to(seg)
    os.link(seg, tmp_path / "hard.nii.gz")
    for out in (
        seg,
        tmp_path / "link.nii.gz",
        tmp_path / "hard.nii.gz",
        tmp_path / "x/../seg.nii.gz",
    ):
        with pytest.raises(SeglabError) as caught:
            refuse_overwriting_inputs({"-o": out, "--qc": None}, {"SEG": seg})
        message = str(caught.value)
        assert f"-o {out} is the input SEG {seg}" in message and "\n" not in message
    # a folder replaced whole may not hold an input
    with pytest.raises(SeglabError, match=f"OUT {tmp_path} holds the input SEG {seg}"):
        refuse_overwriting_inputs({"OUT": tmp_path}, {"SEG": seg})
    # two outputs on one file: the second would replace the first
    with pytest.raises(SeglabError, match="-o .* and --qc .* are the same file"):
        refuse_overwriting_inputs(
            {"-o": tmp_path / "out.nii.gz", "--qc": tmp_path / "out.nii.gz"}, {"SEG": seg}
        )
    # distinct paths (existing or not), missing inputs and unset entries pass
    refuse_overwriting_inputs(
        {"-o": tmp_path / "new.nii.gz", "--qc": tmp_path / "new.qc.csv"},
        {"SEG": seg, "--image": tmp_path / "missing.nii.gz", "--model": None},
    )
    assert seg.read_bytes() == b"labels"


def test_a_record_keeps_everything_and_its_metrics_only_comparable_figures(tmp_path: Path) -> None:
    record = {
        "arch": "unet",
        "dice_mean": 0.81,
        "hd95_mean": float("nan"),
        "epochs": 30,
        "train_seconds": 1284.5,
        "slices_per_second": 70.2,
        "run_id": "0123abcd",
        "model_version": "3",
        "resumed_from": None,
        "crossfit": {"dice_mean": 0.79, "train_seconds": 800.0, "method": "crossfit-2"},
        "valid": True,
        "per_slice": [0.1, 0.2],
    }
    target = tmp_path / "metrics" / "unet.json"
    write_record(target, record)
    assert json.loads(target.read_text())["run_id"] == "0123abcd"  # the whole record
    assert metrics_path(target) == tmp_path / "metrics" / "unet.metrics.json"
    assert json.loads(metrics_path(target).read_text()) == {
        "dice_mean": 0.81,
        "epochs": 30,
        "crossfit": {"dice_mean": 0.79},
    }  # no text, timings, flags, lists or undefined figures
