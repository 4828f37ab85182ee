"""The prepare stage: what `mlflow run -e prepare_acdc` or `dvc repro prepare_acdc` makes is one
MLflow run with the prepared dataset's lineage and figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from seglab.config import (
    AcdcDataParams,
    AcdcPrepareParams,
    PhantomParams,
    SplitParams,
    TrackingParams,
)
from seglab.data.phantom.acdc import write_acdc_phantom
from seglab.stages.prepare import EXPERIMENT, prepare_stage


def test_prepare_logs_one_run_with_the_datasets_lineage_and_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_acdc_phantom(tmp_path / "raw", patients=15, seed=2)  # 3 per group: every split
    data = AcdcDataParams(
        raw=str(tmp_path / "raw"),
        prepared="prepared",
        phantom=PhantomParams(patients=15),
        prepare=AcdcPrepareParams(split=SplitParams(val=0.2, test=0.2)),
    )
    tracking = TrackingParams(uri="sqlite:///mlflow.db")
    summary = prepare_stage("acdc", data, tracking)
    assert summary.startswith("prepared ACDC into prepared")

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.info.run_name == "prepare-acdc" and run.info.status == "FINISHED"
    assert run.data.tags["data.acdc_prepared.dvc_md5"]
    metrics = run.data.metrics
    assert metrics["train_patients"] + metrics["val_patients"] + metrics["test_patients"] == 15
    assert metrics["train_slices"] > 0 and 0.9 <= metrics["train_gt_validity"] <= 1.0
    assert run.data.params["prepare.size"] == "128"
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["acdc_prepared"]
