"""The brain study's stages: one architecture trained, tested, logged and registered (so that
``seglab promote`` accepts it); the comparison table and figures; encoder-weight settings."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from seglab.cli import build_parser
from seglab.config import (
    BrainParams,
    LggArchsParams,
    LggDataParams,
    LggPrepareParams,
    LggTrainParams,
    PromotionParams,
    SplitParams,
    TrackingParams,
    TrainerParams,
    apply_profile,
    load_params,
)
from seglab.data.phantom.lgg import write_lgg_phantom
from seglab.data.prepare_lgg import prepare_lgg
from seglab.data.store import load_split
from seglab.errors import ConfigError, DataError
from seglab.evaluation.lgg_comparison import COST_KEYS, KEYS
from seglab.evaluation.lgg_report import summarize
from seglab.stages.artifacts import LGG_EXPERIMENT as EXPERIMENT
from seglab.stages.lgg import encoder_weights_file, registered_name, train_lgg
from seglab.stages.lgg_compare import REPORT_FILES, compare_lgg
from seglab.tracking.registry import promote
from seglab.training.lgg import image_tensor, load_lgg_model

ROOT = Path(__file__).resolve().parents[2]
ARCH = "pspnet-resnet18"  # the cheapest of the six on a CPU


def _params(root: Path, **train: object) -> BrainParams:
    return BrainParams(
        lgg=LggDataParams(
            raw=str(root / "raw"),
            prepared=str(root / "prepared"),
            prepare=LggPrepareParams(size=64, split=SplitParams(val=0.2, test=0.2)),
        ),
        tracking=TrackingParams(uri="sqlite:///mlflow.db", artifacts="mlartifacts"),
        architectures=LggArchsParams(
            names=(ARCH,),
            train=LggTrainParams(
                trainer=TrainerParams(
                    max_epochs=1, batch_size=8, accelerator="cpu", limit_train_batches=2
                ),
                **train,
            ),
        ),
    )


def test_the_project_params_validate_and_default_to_random_encoders() -> None:
    params = load_params(ROOT / "pipelines/lgg/params.yaml", BrainParams)
    archs = params.architectures
    assert len(archs.names) == 6 and archs.train.encoder_weights is None
    raw = yaml.safe_load((ROOT / "pipelines/lgg/params.yaml").read_text())
    full = BrainParams.model_validate(apply_profile(raw | {"profile": "full"})).architectures
    trainer = full.train.trainer
    assert (trainer.max_epochs, trainer.batch_size, trainer.early_stopping_patience) == (30, 16, 5)
    assert full.train.lr == 1e-4 and trainer.limit_train_batches == 1.0


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["unet-resnet18", "unet-resnet18"], "twice"),
        (["unet-resnet18", "segformer-mit"], "decoder among"),
    ],
)
def test_bad_architecture_lists_are_config_errors(
    tmp_path: Path, names: list[str], match: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"architectures": {"names": names}}))
    with pytest.raises(ConfigError, match=f"{path}: architectures.names: .*{match}"):
        load_params(path, BrainParams)


def test_imagenet_weights_come_from_local_files_only(tmp_path: Path) -> None:
    archs = _params(tmp_path).architectures
    assert encoder_weights_file(archs, "unet-resnet18", tmp_path) is None
    imagenet = _params(
        tmp_path, encoder_weights="imagenet", weights_files={"resnet18": "weights/r18.pth"}
    ).architectures
    assert encoder_weights_file(imagenet, "fpn-resnet18", tmp_path) == (
        tmp_path / "weights/r18.pth"
    )
    with pytest.raises(ConfigError, match="no file for encoder 'resnet101'.*never downloaded"):
        encoder_weights_file(imagenet, "unet-resnet101", tmp_path)


def test_a_missing_weights_file_stops_before_any_run(tmp_path: Path) -> None:
    params = _params(
        tmp_path, encoder_weights="imagenet", weights_files={"resnet18": "weights/r18.pth"}
    )
    with pytest.raises(ConfigError, match=r"weights/r18.pth: encoder weights file not found"):
        train_lgg(params, ARCH, root=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    params = _params(tmp_path)
    with pytest.raises(ConfigError, match="'unet-resnet18' is not in architectures.names"):
        train_lgg(params, "unet-resnet18", root=tmp_path)
    with pytest.raises(ConfigError, match="decoder among"):
        train_lgg(params, "vnet-resnet18", root=tmp_path)


def test_missing_inputs_are_one_line_errors(tmp_path: Path) -> None:
    params = _params(tmp_path)
    with pytest.raises(DataError, match="train.npz: prepared split not found"):
        train_lgg(params, ARCH, root=tmp_path)
    with pytest.raises(DataError, match=f"{ARCH}.json: architecture metrics not found"):
        compare_lgg(params, root=tmp_path)
    (tmp_path / "metrics/lgg").mkdir(parents=True)
    (tmp_path / f"metrics/lgg/{ARCH}.json").write_text('{"iou": 1}')
    with pytest.raises(DataError, match="not an LGG architecture metrics file"):
        compare_lgg(params, root=tmp_path)
    with pytest.raises(DataError, match="x.ckpt: LGG model checkpoint not found"):
        load_lgg_model(tmp_path / "x.ckpt")


def test_cli_names_the_stage_commands() -> None:
    args = build_parser().parse_args(["lgg", "train", "--arch", "unet-resnet18"])
    assert (args.lgg_command, args.arch, args.params) == ("train", "unet-resnet18", None)
    assert build_parser().parse_args(["lgg", "compare"]).lgg_command == "compare"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BrainParams, dict]:
    """A 3-patient phantom at 64x64 (one patient per split), one architecture, one epoch."""
    root = tmp_path_factory.mktemp("lgg-stage")
    write_lgg_phantom(root / "raw", patients=3, seed=1)
    params = _params(root)
    prepare_lgg(params.lgg)
    result = train_lgg(params, ARCH, root=root)
    return root, params, result


@pytest.mark.slow
def test_a_trained_architecture_is_logged_registered_and_promotable(
    trained: tuple[Path, BrainParams, dict],
) -> None:
    root, params, result = trained
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == ARCH and run.info.status == "FINISHED"
    for key in (*KEYS, *COST_KEYS):
        assert run.data.metrics[key] == pytest.approx(result[key], nan_ok=True), key
    assert "val_iou" in run.data.metrics and "val_accuracy" in run.data.metrics
    assert run.data.tags["arch"] == "pspnet" and run.data.tags["encoder"] == "resnet18"
    assert run.data.params["encoder_weights_sha256"] == "random"
    assert result["epochs"] == 1 and result["epochs_to_best"] == 1
    assert result["params_count"] > 11_000_000 and 30 < result["model_mb"] < 60
    assert result["slices_per_second"] > 0 and result["train_seconds"] > 0
    assert result["lr"] == params.architectures.train.lr and result["schedule"] == "constant"
    curves = pd.read_csv(root / f"metrics/lgg/{ARCH}.curves.csv")  # the DVC plot
    assert list(curves["epoch"]) == [0] and curves["seconds"].iloc[0] > 0
    assert curves["val_iou"].iloc[0] == pytest.approx(run.data.metrics["val_iou"])

    # The figures are those of the stored checkpoint on the test split.
    test = load_split(root / "prepared/test.npz")
    module = load_lgg_model(root / f"models/lgg/{ARCH}.ckpt").eval()
    with torch.no_grad():
        pred = (module(image_tensor(test))[:, 0] > 0).numpy().astype(np.uint8)
    expected = summarize(pred, test.label, test.meta["patient"].to_numpy())
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], nan_ok=True), key
    assert result["tumour_slices"] == int(test.meta["has_tumour"].sum())

    name = registered_name(ARCH)
    assert name == "lgg-pspnet-resnet18"
    version = client.get_model_version(name, "1")
    assert version.tags["eval.split"] == "test"
    assert version.tags["eval.dataset_md5"] == run.data.tags["data.lgg_prepared.dvc_md5"]
    model = mlflow.pytorch.load_model(f"models:/{name}/1")
    with torch.no_grad():
        logits = model(image_tensor(test)[:3])
    assert logits.shape == (3, 1, 64, 64)
    # A network trained for a few steps is below the default floors (tested in test_registry);
    # without them, the LGG version is promotable on its own metric.
    open_floors = PromotionParams(floors={}, max_emptied=1.0)
    decision = promote(name, params.tracking, root, dry_run=True, rules=open_floors)
    assert decision.metric == "iou" and decision.outcome == "promoted"
    assert decision.candidate.value == pytest.approx(result["iou"])

    stored = json.loads((root / f"metrics/lgg/{ARCH}.json").read_text())
    assert stored["registered_model"] == name and stored["model_version"] == "1"
    assert stored["device"].startswith("cpu") and stored["image_size"] == 64
    assert not list((root / "data/work/lgg").glob("*")), "work folders are removed"


@pytest.mark.slow
def test_compare_writes_the_table_and_figures_and_logs_them(
    trained: tuple[Path, BrainParams, dict],
) -> None:
    root, params, result = trained
    markdown = compare_lgg(params, root=root)
    report = root / "reports/lgg"
    assert sorted(p.name for p in report.iterdir()) == sorted(REPORT_FILES.values())
    assert (report / "comparison.md").read_text() == markdown
    assert f"| {ARCH} |" in markdown and "image_size 64" in markdown
    table = pd.read_csv(report / "comparison.csv")
    assert table["name"].tolist() == [ARCH]
    assert table["iou"][0] == pytest.approx(result["iou"], rel=1e-5, nan_ok=True)
    for png in ("iou_vs_train_seconds.png", "iou_vs_params.png", "model_size.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.role = 'comparison'"
    )
    assert run.data.tags[f"run.{ARCH}"] == result["run_id"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "comparison")}
    assert logged == {f"comparison/{f}" for f in REPORT_FILES.values()}
