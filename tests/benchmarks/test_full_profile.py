"""The study-size profile runs: every training and evaluation stage of the cardiac pipeline at
``profile: full``'s sizes, one batch each, on the CPU and the phantom, through export and
registration (``benchmarks/bench_full_profile.py``)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tests.benchmarks.test_benchmarks import BENCHMARKS

pytestmark = pytest.mark.slow  # about 30 min on a 2-core CPU (27.9-28.7 min measured)

REGISTERED = {
    "acdc-segmenter-unet",
    "acdc-segmenter-resunet",
    "acdc-segmenter-attunet",
    "acdc-segmenter-swinunetr",
    "acdc-nvae",
    "acdc-nvae-corrector",
    "acdc-nvae-context",
}


def test_every_stage_runs_at_full_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench_full_profile")
    folder, figures = tmp_path / "project", tmp_path / "full.json"
    rows = bench.main(["--keep", str(folder), "--json", str(figures), "--patients", "20"])
    shown = capsys.readouterr()
    print(shown.out)  # the per-stage table, shown with -s / in CI logs
    failed = [row["stage"] for row in rows if row["rc"] != 0]
    assert not failed, f"stages failed at full sizes: {failed}\n{shown.err[-2500:]}"
    assert [row["stage"] for row in rows] == [name for name, _ in bench.stages(20)]
    assert all(row["peak_rss_mib"] > 0 and row["disk_gib"] > 0 for row in rows)
    assert json.loads(figures.read_text())["stages"] == rows
    for arch in bench.ARCHS:
        metrics = json.loads((folder / f"metrics/segmenters/{arch}.json").read_text())
        assert metrics["params_count"] > 1_000_000  # the study's widths, not the quick ones
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    names = {m.name for m in client.search_registered_models()}
    assert REGISTERED <= names
    search = client.get_experiment_by_name("acdc-nvae-search")
    assert search is not None
    trials = client.search_runs([search.experiment_id], "tags.mlflow.runName LIKE 'trial-%'")
    assert trials, "the stem-64 search trial left no MLflow run"
    assert (folder / "metrics/correction.json").is_file()
