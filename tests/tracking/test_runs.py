"""tracked_run against a real SQLite MLflow store: tags, params, statuses, nesting, `mlflow run`."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from tests.helpers import dvc, git

from seglab.config import CardiacParams, TrackingParams
from seglab.errors import ConfigError, DataError
from seglab.tracking import runs
from seglab.tracking.runs import (
    artifact_location,
    configure,
    ensure_experiment,
    log_artifact,
    log_dict,
    log_figure,
    log_metrics,
    resolve_uri,
    tracked_run,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module: creating its schema takes seconds, so it is shared and
    every test uses its own experiment names."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runs, "_launched", None)  # a launch is remembered per process
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site-cache"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    yield
    while mlflow.active_run() is not None:  # never leak a run into the next test
        mlflow.end_run()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "data" / "ds").mkdir(parents=True)
    (root / "data" / "ds" / "a.txt").write_text("alpha\n")
    (root / "data" / "ds" / "b.bin").write_bytes(bytes(range(256)))
    (root / "params.yaml").write_text(yaml.safe_dump({"profile": "quick"}))
    git(root, "init", "-q")
    git(root, "add", "params.yaml")
    git(root, "commit", "-q", "-m", "init")
    return root


def run_of(store: str, run_id: str) -> mlflow.entities.Run:
    return MlflowClient(store).get_run(run_id)


def runs_in(store: str, experiment: str) -> list[mlflow.entities.Run]:
    found = MlflowClient(store).get_experiment_by_name(experiment)
    if found is None:
        return []
    return MlflowClient(store).search_runs([found.experiment_id])


def test_uris_resolve_against_the_project(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    uri = configure(TrackingParams(), root)
    assert uri == f"sqlite:///{root.resolve()}/mlflow.db"
    assert mlflow.get_tracking_uri() == uri
    assert resolve_uri("sqlite:////abs/m.db", root) == "sqlite:////abs/m.db"
    assert resolve_uri("http://mlflow.lab:5000", root) == "http://mlflow.lab:5000"
    assert resolve_uri("postgresql://u@db/mlflow", root) == "postgresql://u@db/mlflow"
    assert resolve_uri("runs", root) == (root / "runs").resolve().as_uri()

    local = artifact_location(TrackingParams(), root, uri)
    assert local == (root / "mlartifacts").resolve().as_uri()
    server = TrackingParams(uri="http://mlflow.lab:5000")
    assert artifact_location(server, root, server.uri) is None
    s3 = TrackingParams(artifacts="s3://bucket/seglab")
    assert artifact_location(s3, root, uri) == "s3://bucket/seglab"


def test_ensure_experiment_creates_once_in_the_project(tmp_path: Path, store: str) -> None:
    tracking = TrackingParams(uri=store, artifacts="store/artifacts")
    first = ensure_experiment(tracking, "acdc-nvae", root=tmp_path)
    assert ensure_experiment(tracking, "acdc-nvae", root=tmp_path) == first
    location = MlflowClient(store).get_experiment(first).artifact_location
    assert location == (tmp_path / "store" / "artifacts").resolve().as_uri()

    MlflowClient(store).delete_experiment(first)
    with pytest.raises(ConfigError, match="experiment 'acdc-nvae' is deleted"):
        ensure_experiment(tracking, "acdc-nvae", root=tmp_path)


def test_run_carries_lineage_params_and_artifacts(project: Path, store: str) -> None:
    dvc(project, "init", "-q")
    dvc(project, "add", "-q", "data/ds")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "track data")
    dvc_md5 = yaml.safe_load((project / "data" / "ds.dvc").read_text())["outs"][0]["md5"]
    tracking = TrackingParams(uri=store)
    params = CardiacParams(tracking=tracking)

    with tracked_run(
        tracking,
        "acdc-segmenters",
        "unet",
        root=project,
        params=params,
        datasets={"ds": Path("data/ds")},
        params_file=project / "params.yaml",
        tags={"stage": "train"},
    ) as run:
        log_metrics({"dice_mean": 0.5}, step=1)
        log_dict({"dice_lv": 0.9}, "report.json")
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        log_figure(fig, "plots/curve.png")
        plt.close(fig)
        (project / "out").mkdir()
        (project / "out" / "x.txt").write_text("x")
        log_artifact(project / "out")

    done = run_of(store, run.info.run_id)
    tags, logged = done.data.tags, done.data.params
    head = git(project, "rev-parse", "HEAD")
    assert done.info.status == "FINISHED"
    assert tags["git.commit"] == tags["mlflow.source.git.commit"] == head
    assert tags["git.dirty"] == "false"
    assert tags["data.ds.dvc_md5"] == dvc_md5
    assert tags["data.ds.path"] == str((project / "data" / "ds").resolve())
    expected = hashlib.sha256((project / "params.yaml").read_bytes()).hexdigest()
    assert tags["params.sha256"] == expected
    assert tags["version.mlflow"] == mlflow.__version__
    assert tags["stage"] == "train"
    assert tags["mlflow.runName"] == "unet"
    assert logged["acdc.prepare.size"] == "128"
    assert logged["acdc.prepare.split.seed"] == "42"
    assert logged["tracking.uri"] == store
    assert done.data.metrics["dice_mean"] == 0.5
    (logged_input,) = done.inputs.dataset_inputs  # the UI's Datasets column
    assert logged_input.dataset.name == "ds" and logged_input.dataset.digest == dvc_md5
    assert str((project / "data" / "ds").resolve()) in logged_input.dataset.source
    assert {(t.key, t.value) for t in logged_input.tags} == {("mlflow.data.context", "training")}

    experiment = MlflowClient(store).get_experiment(done.info.experiment_id)
    assert experiment.name == "acdc-segmenters"
    assert experiment.artifact_location == (project / "mlartifacts").resolve().as_uri()
    artifacts = Path(done.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(project.resolve() / "mlartifacts")
    assert (artifacts / "report.json").is_file()
    assert (artifacts / "plots" / "curve.png").stat().st_size > 0
    assert (artifacts / "out" / "x.txt").read_text() == "x"

    (project / "params.yaml").write_text("profile: full\n")
    with tracked_run(tracking, "acdc-segmenters", "unet-dirty", root=project) as dirty:
        pass
    assert run_of(store, dirty.info.run_id).data.tags["git.dirty"] == "true"


def test_failure_marks_the_run_and_propagates(project: Path, store: str) -> None:
    tracking = TrackingParams(uri=store)
    with pytest.raises(ValueError, match="boom"):
        with tracked_run(tracking, "failures", "broken", root=project) as run:
            raise ValueError("boom")
    assert run_of(store, run.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None

    with pytest.raises(KeyboardInterrupt):
        with tracked_run(tracking, "failures", "interrupted", root=project) as run:
            raise KeyboardInterrupt
    assert run_of(store, run.info.run_id).info.status == "KILLED"


def test_a_resumed_training_continues_its_run(project: Path, store: str) -> None:
    tracking = TrackingParams(uri=store)
    work = project / "work"
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(tracking, "resumes", "unet", root=project, resume=work) as first:
            log_metrics({"val_dice": 0.5}, step=0)
            raise KeyboardInterrupt
    assert (work / runs.RUN_ID_FILE).read_text().strip() == first.info.run_id
    with tracked_run(tracking, "resumes", "unet", root=project, resume=work) as second:
        log_metrics({"val_dice": 0.7}, step=1)
    assert second.info.run_id == first.info.run_id
    history = MlflowClient(store).get_metric_history(first.info.run_id, "val_dice")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.7)]
    assert run_of(store, first.info.run_id).info.status == "FINISHED"
    # A stage removes its work folder when it completes; without it, a new run starts.
    shutil.rmtree(work)
    with tracked_run(tracking, "resumes", "unet", root=project, resume=work) as third:
        pass
    assert third.info.run_id != first.info.run_id and len(runs_in(store, "resumes")) == 2


def test_a_run_left_running_by_a_dead_process_is_ended_killed(project: Path, store: str) -> None:
    tracking = TrackingParams(uri=store)
    experiment_id = ensure_experiment(tracking, "orphans", root=project)
    client = MlflowClient(store)
    gone = subprocess.Popen(["true"])  # a pid that has exited
    gone.wait()
    orphan = client.create_run(experiment_id, run_name="unet").info.run_id
    alive = client.create_run(experiment_id, run_name="unet").info.run_id
    other = client.create_run(experiment_id, run_name="resunet").info.run_id
    host = runs.socket.gethostname()
    client.set_tag(orphan, runs.HOST_TAG, host)
    client.set_tag(orphan, runs.PID_TAG, str(gone.pid))
    client.set_tag(alive, runs.HOST_TAG, host)
    client.set_tag(alive, runs.PID_TAG, str(os.getpid()))
    client.set_tag(other, runs.HOST_TAG, host)
    client.set_tag(other, runs.PID_TAG, str(gone.pid))
    with tracked_run(tracking, "orphans", "unet", root=project) as run:
        pass
    assert run_of(store, orphan).info.status == "KILLED"
    assert run_of(store, alive).info.status == "RUNNING"  # its process still runs
    assert run_of(store, other).info.status == "RUNNING"  # another stage's, left to it
    assert run_of(store, run.info.run_id).data.tags[runs.PID_TAG] == str(os.getpid())


def test_missing_dataset_stops_before_any_run(project: Path, store: str) -> None:
    with pytest.raises(DataError, match="nowhere: input dataset 'acdc' not found"):
        with tracked_run(
            TrackingParams(uri=store),
            "missing-data",
            "x",
            root=project,
            datasets={"acdc": Path("nowhere")},
        ):
            pass
    assert runs_in(store, "missing-data") == []


def test_nested_and_parent_runs(project: Path, store: str) -> None:
    tracking = TrackingParams(uri=store)
    with tracked_run(tracking, "acdc-nvae-search", "study", root=project) as parent:
        with tracked_run(tracking, "acdc-nvae-search", "trial-0", root=project, nested=True) as t0:
            assert mlflow.active_run().info.run_id == t0.info.run_id
        assert mlflow.active_run().info.run_id == parent.info.run_id
        with pytest.raises(RuntimeError, match="nested=True"):
            with tracked_run(tracking, "acdc-nvae-search", "oops", root=project):
                pass
    parent_id = parent.info.run_id
    # a worker elsewhere: the parent is not active in this process
    with tracked_run(
        tracking, "acdc-nvae-search", "trial-1", root=project, parent_run_id=parent_id
    ) as t1:
        pass

    for child in (t0, t1):
        done = run_of(store, child.info.run_id)
        assert done.data.tags["mlflow.parentRunId"] == parent_id
        assert done.data.tags["git.commit"] == git(project, "rev-parse", "HEAD")
        assert done.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in run_of(store, parent_id).data.tags
    assert len(runs_in(store, "acdc-nvae-search")) == 3


def test_mlflow_run_launch_logs_into_the_launchers_run(
    project: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = MlflowClient(store)
    launched_exp = client.create_experiment("launched-by-mlflow-run")
    launched = client.create_run(launched_exp).info.run_id  # what `mlflow run` does first
    monkeypatch.setenv("MLFLOW_RUN_ID", launched)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", launched_exp)

    tracking = TrackingParams()  # the project default: the launcher's store must win over it
    with tracked_run(
        tracking, "launched-by-mlflow-run", "stage", root=project, params={"lr": 0.1}
    ) as run:
        assert run.info.run_id == launched
        log_metrics({"dice_mean": 0.7})

    assert [r.info.run_id for r in runs_in(store, "launched-by-mlflow-run")] == [launched]
    done = client.get_run(launched)
    assert done.info.status == "FINISHED"
    assert done.data.tags["git.commit"] == git(project, "rev-parse", "HEAD")
    assert done.data.tags["mlflow.runName"] == "stage"
    assert done.data.params == {"lr": "0.1"}
    assert done.data.metrics == {"dice_mean": 0.7}
    assert not (project / "mlflow.db").exists()

    # MLflow's end_run() has dropped MLFLOW_RUN_ID; a second run in the same process must not
    # reuse (and overwrite) the launcher's run, nor go to another store
    assert "MLFLOW_RUN_ID" not in os.environ
    with tracked_run(tracking, "launched-by-mlflow-run", "second", root=project) as second:
        pass
    assert second.info.run_id != launched
    assert client.get_run(second.info.run_id).data.tags["mlflow.parentRunId"] == launched
    assert not (project / "mlflow.db").exists()


def test_outside_git_the_run_still_starts(tmp_path: Path, store: str) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with tracked_run(TrackingParams(uri=store), "no-git", "x", root=plain) as run:
        pass
    tags = run_of(store, run.info.run_id).data.tags
    assert tags["git.commit"] == "unknown"
    assert tags["git.dirty"] == "unknown"
    assert "mlflow.source.git.commit" not in tags  # not the commit of the test's own checkout


def test_params_respect_mlflow_limits(project: Path, store: str) -> None:
    many = {f"k{i:03d}": i for i in range(150)}  # more than one 100-param batch
    params = {"model": {"arch": "unet", "widths": {"stem": 32}}, "long": "x" * 600, **many}
    with tracked_run(TrackingParams(uri=store), "limits", "x", root=project, params=params) as run:
        pass
    logged = run_of(store, run.info.run_id).data.params
    assert logged["model.arch"] == "unet"
    assert logged["model.widths.stem"] == "32"
    assert len(logged["long"]) == runs.PARAM_VALUE_LIMIT == 500
    assert logged["long"].endswith("...")
    assert len(logged) == 153


def test_helpers_refuse_to_start_a_stray_run(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_metrics({"dice_mean": 1.0})
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_dict({"a": 1}, "a.json")
