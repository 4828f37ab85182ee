"""The GPU run's dry run: pack a prepared set, train every model of the study at tiny sizes on
the CPU through the same script, and get the report a lent GPU would give."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.data.phantom.masks import heart_slices
from seglab.data.store import save_split
from seglab.errors import DataError

GPU = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(GPU))
    return importlib.import_module("bench_gpu")


def prepared(folder: Path) -> Path:
    for seed, (split, n) in enumerate({"train": 24, "val": 8, "test": 8}.items()):
        save_split(folder / f"{split}.npz", heart_slices(n, 64, seed=seed, patients=2))
    return folder


def test_pack_round_trip_and_limit(tmp_path: Path, bench: object) -> None:
    pack = sys.modules["pack"]
    source = prepared(tmp_path / "prepared")
    assert pack.make_pack(source, tmp_path / "p.npz") < 1
    back = pack.load_pack(tmp_path / "p.npz")
    original = heart_slices(24, 64, seed=0, patients=2)
    assert abs(back["train"].image - original.image).max() <= 0.5 / 255 + 1e-6
    assert (back["train"].label == original.label).all()
    assert back["train"].meta.equals(original.meta)
    with pytest.raises(DataError, match="over the 0 MiB limit"):
        pack.make_pack(source, tmp_path / "big.npz", limit_mib=1e-4)
    assert not (tmp_path / "big.npz").exists()


# What the GPU machine lacks (benchmarks/gpu/fetch_wheels.sh carries MONAI, nibabel, pydantic).
ABSENT = {"mlflow", "optuna", "dvc", "torchio", "SimpleITK"}
WITHOUT = """
import importlib.abc, runpy, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {absent!r}:
            raise ModuleNotFoundError(name, name=name)
sys.meta_path.insert(0, Absent())
sys.argv = [{script!r}, *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_dry_run_trains_and_reports_every_model(tmp_path: Path, bench: object) -> None:
    """The script as the GPU runs it, on the CPU at tiny sizes, without the packages the GPU
    machine lacks."""
    sys.modules["pack"].make_pack(prepared(tmp_path / "prepared"), tmp_path / "p.npz")
    out = tmp_path / "gpu.json"
    args = ["--pack", str(tmp_path / "p.npz"), "--tiny", "--max-epochs", "1", "--out", str(out)]
    code = WITHOUT.format(absent=ABSENT, script=str(GPU / "bench_gpu.py"), args=args)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test Dice" in done.stdout
    report = json.loads(out.read_text())
    assert [row["model"] for row in report["models"]] == [*bench.ARCHS, "nvae"]
    for row in report["models"]:
        assert row["epochs"] == 1 and row["slices_per_second"] > 0
        assert 0 <= row["test"]["dice_mean"] <= 1 and "hd95_mean" in row["test"]
        assert row["peak_gpu_memory_gib"] is None  # the CPU has none
