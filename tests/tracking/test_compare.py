"""`seglab runs compare` on real runs in a SQLite store: params, metrics, lineage side by side."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from tests.helpers import git

from seglab.cli import main
from seglab.config import TrackingParams
from seglab.errors import SeglabError
from seglab.tracking import runs
from seglab.tracking.compare import compare_runs, render_comparison
from seglab.tracking.runs import log_metrics, tracked_run


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runs, "_launched", None)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / "dvc-site-cache"))
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str, str]:
    """Two training runs that differ in a param, a metric, the data and the commit."""
    tmp = tmp_path_factory.mktemp("compare")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    root = tmp / "project"
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("initial\n")
    (root / "params.yaml").write_text("profile: quick\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    tracking = TrackingParams(uri=store)
    ids = []
    for lr, dice, text in ((0.01, 0.8, "first\n"), (0.02, 0.85, "second\n")):
        (root / "data" / "a.txt").write_text(text)
        git(root, "commit", "-q", "-am", f"data {text.strip()}")
        with tracked_run(
            tracking,
            "acdc-segmenters",
            f"unet-lr{lr}",
            root=root,
            params={"lr": lr, "epochs": 5},
            datasets={"acdc": Path("data/a.txt")},
            params_file=root / "params.yaml",
            tags={"stage": "train"},
        ) as run:
            log_metrics({"dice_mean": dice, "hd95_mean": 4.0})
        ids.append(run.info.run_id)
    return store, root, ids[0], ids[1]


def test_rows_side_by_side_with_differences_marked(
    two_runs: tuple[str, Path, str, str],
) -> None:
    store, root, a, b = two_runs
    comparison = compare_runs(a, b, TrackingParams(uri=store), root)
    rows = {(r.section, r.key): r for r in comparison.rows}

    assert comparison.run_ids == (a, b)
    assert rows[("run", "name")].a == "unet-lr0.01" and rows[("run", "name")].b == "unet-lr0.02"
    assert rows[("run", "experiment")].a == rows[("run", "experiment")].b == "acdc-segmenters"
    assert rows[("params", "lr")].differs and rows[("params", "lr")].a == "0.01"
    assert not rows[("params", "epochs")].differs
    assert rows[("metrics", "dice_mean")].b == "0.85"
    assert not rows[("metrics", "hd95_mean")].differs
    assert rows[("lineage", "git.commit")].differs
    assert rows[("lineage", "data.acdc.dvc_md5")].differs
    assert not rows[("lineage", "params.sha256")].differs
    assert not rows[("lineage", "version.mlflow")].differs
    assert not rows[("lineage", "seglab.git.commit")].differs  # the tests run from a checkout
    assert rows[("tags", "stage")].a == "train"
    assert not any(key.startswith("mlflow.") for _, key in rows)

    table = render_comparison(comparison)
    lines = table.splitlines()
    assert lines[0] == f"A: {a}" and lines[1] == f"B: {b}"
    assert "[lineage]" in lines
    lr = next(line for line in lines if " lr " in line)
    assert lr.startswith("* ") and lr.split()[-2:] == ["0.01", "0.02"]
    epochs = next(line for line in lines if " epochs " in line)
    assert epochs.startswith("  ")
    only = render_comparison(comparison, only_differences=True)
    assert " epochs " not in only and " lr " in only
    assert only.splitlines()[-1].endswith("values differ (* marks them)")


def test_models_uri_names_the_run_that_made_a_version(
    two_runs: tuple[str, Path, str, str],
) -> None:
    store, root, a, b = two_runs
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model("acdc-segmenter-unet")
    for run_id in (a, b):
        client.create_model_version("acdc-segmenter-unet", "file:///nowhere", run_id=run_id)
    client.set_registered_model_alias("acdc-segmenter-unet", "champion", "2")
    first, champion = "models:/acdc-segmenter-unet/1", "models:/acdc-segmenter-unet@champion"
    comparison = compare_runs(first, champion, TrackingParams(uri=store), root)
    assert comparison.run_ids == (a, b)
    assert render_comparison(comparison).splitlines()[1] == (
        f"B: models:/acdc-segmenter-unet@champion (run {b})"
    )


def test_cli_table_json_and_refusal(
    two_runs: tuple[str, Path, str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    store, _, a, b = two_runs
    params = tmp_path / "params.yaml"
    params.write_text(f"tracking:\n  uri: {store}\n")
    assert main(["runs", "compare", a, b, "--json", "--params", str(params)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in out["runs"]] == [a, b]
    lr = next(r for r in out["rows"] if r["key"] == "lr")
    assert lr == {"section": "params", "key": "lr", "a": "0.01", "b": "0.02", "differs": True}

    assert main(["runs", "compare", a, "f" * 32, "--params", str(params)]) == 2
    assert f"run '{'f' * 32}' not found" in capsys.readouterr().err
    with pytest.raises(SeglabError, match="registered model 'acdc-nope' not found"):
        compare_runs(a, "models:/acdc-nope@champion", TrackingParams(uri=store), tmp_path)
