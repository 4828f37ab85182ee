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


@pytest.mark.slow
def test_search_dry_run_counts_trials_per_worker_count(tmp_path: Path, bench: object) -> None:
    """The search's throughput as the GPU runs it (Optuna carried, no SQLAlchemy or MLflow):
    every worker count gets its row, and only trials that ran all their epochs count."""
    sys.modules["pack"].make_pack(prepared(tmp_path / "prepared"), tmp_path / "p.npz")
    out = tmp_path / "search.json"
    pack = tmp_path / "p.npz"
    args = f"--pack {pack} --tiny --workers 1 2 --minutes 0.75 --trial-epochs 1 --out {out}".split()
    absent = (ABSENT - {"optuna"}) | {"sqlalchemy", "alembic"}
    code = WITHOUT.format(absent=absent, script=str(GPU / "bench_search.py"), args=args)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trials/h" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [row["workers"] for row in rows] == [1, 2]
    for row in rows:  # one-epoch trials: every epoch inside the window is a finished trial
        assert row["epochs_per_hour"] > 0 and row["study_grid_hours"] > 0
        assert row["trials_per_hour"] == pytest.approx(row["epochs_per_hour"], rel=0.5)
        assert 0 <= row["best_val_dice"] <= 1


def test_search_counts_only_trials_that_trained_every_epoch_in_the_window(bench: object) -> None:
    import optuna

    search = importlib.import_module("bench_search")

    def trial(epochs: int, finished: float, state: str = "COMPLETE") -> object:
        done = optuna.trial.TrialState[state]
        return optuna.trial.create_trial(
            state=done,
            value=0.5 if done == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={"epochs": epochs, "finished": finished},
        )

    trials = [trial(5, 90.0), trial(3, 99.0), trial(5, 101.0), trial(5, 50.0, "FAIL")]
    assert search.finished_trials(trials, 5, deadline=100.0) == trials[:1]
