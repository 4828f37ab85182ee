"""The segmenter stage: folds, test figures, file checks, and one end-to-end run on a phantom
(train -> test -> MLflow run with lineage -> registered model that loads -> DVC outputs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from tests.helpers import TINY

from seglab.config import (
    AcdcDataParams,
    AcdcPrepareParams,
    AcdcSegParams,
    CardiacParams,
    PhantomParams,
    SegmentersParams,
    SegmenterTrainParams,
    SplitParams,
    TrackingParams,
    TrainerParams,
)
from seglab.data.phantom.acdc import write_acdc_phantom
from seglab.data.phantom.masks import heart_masks
from seglab.data.prepare_acdc import prepare_acdc
from seglab.data.store import SliceSet, end_weights, load_split, save_split
from seglab.errors import ConfigError, DataError, SeglabError
from seglab.evaluation.segmentation import TEST_KEYS, evaluate
from seglab.inference.postprocess import METHODS, MIN_PIXELS, Cleanup
from seglab.inference.segment import (
    cleanup_of,
    context_of,
    flips_of,
    load_segmenter,
    predict_labels,
)
from seglab.metrics.anatomy import check_slices
from seglab.stages import segmenters as stage
from seglab.stages.artifacts import load_crossfit
from seglab.stages.segmenters import (
    EXPERIMENT,
    registered_name,
    train_segmenter,
)
from seglab.training.datamodule import TensorDataModule
from seglab.training.segmenters import new_module, segmenter_data


def _slices(label: np.ndarray) -> SliceSet:
    n = len(label)
    meta = pd.DataFrame(
        {"patient": ["p1"] * n, "frame": [1] * n, "slice_index": range(n),
         "spacing_x": [1.5] * n, "spacing_y": [1.5] * n}
    )  # fmt: skip
    return SliceSet(image=np.zeros(label.shape, np.float32), label=label, meta=meta)


def test_empty_predictions_are_not_valid_and_counted_apart() -> None:
    """A network that predicts background everywhere breaks no anatomical criterion; its test
    figures must still call none of its masks valid where the ground truth has a heart."""
    label = heart_masks(4, 32, seed=0)
    label[3] = 0  # a slice beyond the apex: predicting nothing is right there
    meta = pd.DataFrame(
        {"patient": "p1", "frame": 1, "spacing_x": [1.5] * 4, "spacing_y": [1.5] * 4}
    )
    slices = SliceSet(image=np.zeros(label.shape, np.float32), label=label, meta=meta)
    figures = evaluate(np.zeros_like(label), slices)
    assert list(figures)[: len(TEST_KEYS)] == list(TEST_KEYS)
    assert figures["anatomical_validity"] == 0.25 and figures["dice_mean"] == 0.0
    assert figures["emptied"] == 3 and figures["emptied_fraction"] == 1.0
    perfect = evaluate(label, slices)
    assert perfect["anatomical_validity"] == 1.0 and perfect["emptied"] == 0


def test_crossfit_file_must_match_the_prepared_train_split(tmp_path: Path) -> None:
    label = np.zeros((3, 8, 8), np.uint8)
    train = _slices(label)
    path = tmp_path / "unet.crossfit.npz"
    with pytest.raises(DataError, match="unet.crossfit.npz: cross-prediction file not found"):
        load_crossfit(path, train)
    arrays = {
        "method": np.array("crossfit-2"),
        "pred": label + 1,
        "fold": np.array([0, 1, 1], np.int16),
        "patient": np.array(["p1"] * 3),
        "frame": np.array([1, 1, 1]),
        "slice_index": np.array([0, 1, 2]),
    }
    np.savez(path, **arrays)
    pred, fold = load_crossfit(path, train)  # type: ignore[misc]
    assert (pred == 1).all() and fold.tolist() == [0, 1, 1]
    np.savez(path, **{**arrays, "slice_index": np.array([0, 2, 1])})
    with pytest.raises(DataError, match="does not match the prepared train split"):
        load_crossfit(path, train)
    np.savez(path, method=np.array("insample"))
    assert load_crossfit(path, train) is None
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable cross-prediction file"):
        load_crossfit(path, train)


def _params(root: Path, prepared: Path, folds: int = 2) -> CardiacParams:
    return CardiacParams(
        acdc=AcdcDataParams(raw=str(root / "raw"), prepared=str(prepared)),
        tracking=TrackingParams(uri="sqlite:///mlflow.db", artifacts="mlartifacts"),
        segmenters=SegmentersParams(
            archs=("unet",),
            nets=TINY,
            train=SegmenterTrainParams(
                trainer=TrainerParams(
                    max_epochs=1, batch_size=8, accelerator="cpu", limit_train_batches=2
                )
            ),
        ),
        acdcseg=AcdcSegParams(folds=folds),
    )


def test_a_new_segmenter_starts_from_the_seeds_weights() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        train = SegmenterTrainParams(trainer=TrainerParams(seed=seed))
        module = new_module("unet", SegmentersParams(train=train))
        torch.rand(3)  # whatever ran before does not matter
        return list(module.state_dict().values())

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_unknown_arch_and_empty_splits_are_refused(tmp_path: Path) -> None:
    params = _params(tmp_path, tmp_path / "prepared")
    with pytest.raises(ConfigError, match="unknown segmenter architecture 'vnet'"):
        train_segmenter(params, "vnet", root=tmp_path)
    with pytest.raises(ConfigError, match="'resunet' is not in segmenters.archs"):
        train_segmenter(params, "resunet", root=tmp_path)
    label = np.zeros((2, 8, 8), np.uint8)
    full = _slices(label)
    for split in ("train", "val"):
        save_split(tmp_path / "prepared" / f"{split}.npz", full)
    empty = SliceSet(np.zeros((0, 8, 8), np.float32), np.zeros((0, 8, 8), np.uint8), full.meta[:0])
    save_split(tmp_path / "prepared" / "test.npz", empty)
    with pytest.raises(SeglabError, match="prepared: the test split has no slices"):
        train_segmenter(params, "unet", root=tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CardiacParams, dict]:
    """A 15-patient phantom (3 per group: every split gets patients), one tiny UNet trained."""
    root = tmp_path_factory.mktemp("segmenter-stage")
    write_acdc_phantom(root / "raw", patients=15, seed=3)
    data = AcdcDataParams(
        raw=str(root / "raw"),
        prepared=str(root / "prepared"),
        phantom=PhantomParams(patients=15),
        prepare=AcdcPrepareParams(split=SplitParams(val=0.2, test=0.2)),
    )
    prepare_acdc(data)
    params = _params(root, root / "prepared").model_copy(update={"acdc": data})
    result = train_segmenter(params, "unet", root=root, params_file=None)
    return root, params, result


@pytest.mark.slow
def test_end_to_end_run_registers_a_loadable_model_with_lineage(
    trained: tuple[Path, CardiacParams, dict],
) -> None:
    root, params, result = trained
    uri = f"sqlite:///{root / 'mlflow.db'}"  # tracking.uri, relative to the project root
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"unet", "unet-crossfit", "unet-fold0", "unet-fold1"}
    run = runs["unet"]
    assert run.info.status == "FINISHED"
    for key in (*TEST_KEYS, "train_seconds", "params_count", "model_mb"):
        assert key in run.data.metrics, key
        assert run.data.metrics[key] == pytest.approx(result[key], nan_ok=True)
    assert len(client.get_metric_history(run.info.run_id, "val_dice_mean")) == 1  # per epoch
    assert "train_loss" in run.data.metrics
    tags = run.data.tags
    md5 = tags["data.acdc_prepared.dvc_md5"]
    assert md5.endswith(".dir") and tags["arch"] == "unet" and "git.commit" in tags
    assert run.data.params["arch"] == "unet" and run.data.params["net.channels"] == "(4, 8, 16)"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/test_predictions.png" in artifacts

    version = client.get_model_version(registered_name("unet"), "1")
    assert version.run_id == run.info.run_id
    assert version.tags["eval.split"] == "test" and version.tags["eval.dataset_md5"] == md5
    assert version.tags["run_id"] == run.info.run_id
    assert version.tags["data.acdc_prepared.dvc_md5"] == md5
    model = mlflow.pytorch.load_model("models:/acdc-segmenter-unet/1")
    test = load_split(root / "prepared" / "test.npz")
    x = torch.from_numpy(test.image[:3]).unsqueeze(1)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (3, 4, 128, 128)
    local = load_segmenter(root / "models/segmenters/unet.ckpt").eval()
    with torch.no_grad():
        assert torch.allclose(logits, local(x), atol=1e-4)

    # The crossfit runs, under the architecture's run: out-of-fold figures, a child per fold.
    parent = runs["unet-crossfit"]
    assert parent.data.tags["role"] == "crossfit" and "dice_mean" in parent.data.metrics
    assert parent.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert "mlflow.parentRunId" not in run.data.tags
    for k in (0, 1):
        child = runs[f"unet-fold{k}"]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "val_dice_mean" in child.data.metrics


@pytest.mark.slow
def test_end_to_end_outputs_are_what_dvc_declares(
    trained: tuple[Path, CardiacParams, dict],
) -> None:
    root, params, result = trained
    metrics = json.loads((root / "metrics/segmenters/unet.json").read_text())
    assert metrics["registered_model"] == "acdc-segmenter-unet" and metrics["model_version"] == "1"
    for key in (*TEST_KEYS, "train_seconds", "params_count", "model_mb", "epochs"):
        assert key in metrics, key
    assert 0.0 <= metrics["dice_mean"] <= 1.0 and metrics["epochs"] == 1
    curves = pd.read_csv(root / "metrics/segmenters/unet.curves.csv")  # the DVC plot
    assert len(curves) == metrics["epochs"] and {"seconds", "val_dice_mean"} <= set(curves)
    assert (curves["seconds"] > 0).all()
    test = load_split(root / "prepared" / "test.npz")
    module = load_segmenter(root / "models/segmenters/unet.ckpt")
    assert module.hparams["arch"] == "unet"
    # The validity figure is the one seglab.metrics gives for these predictions.
    with torch.no_grad():
        pred = module(torch.from_numpy(test.image).unsqueeze(1)).argmax(dim=1).numpy()
    validity = check_slices(pred.astype(np.uint8), test.spacing).summary()["anatomical_validity"]
    assert metrics["anatomical_validity"] == pytest.approx(validity)

    train = load_split(root / "prepared" / "train.npz")
    crossfit = load_crossfit(root / "models/segmenters/unet.crossfit.npz", train)
    assert crossfit is not None
    pred, fold = crossfit
    assert pred.shape == train.label.shape and set(np.unique(fold)) == {0, 1}
    per_patient = pd.Series(fold).groupby(train.meta["patient"].to_numpy()).nunique()
    assert (per_patient == 1).all()  # a patient's slices are all in one fold
    summary = json.loads((root / "metrics/segmenters/unet.crossfit.json").read_text())
    assert summary["method"] == "crossfit-2" and "dice_mean" in summary
    assert result["crossfit"]["method"] == "crossfit-2"
    assert not any((root / "data/work/segmenters").glob("*")), "work folders are removed"


@pytest.mark.slow
def test_a_2_5d_segmenter_keeps_its_context_and_its_clean_up_chosen_on_val(
    trained: tuple[Path, CardiacParams, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neighbouring slices as input channels and the post-processing chosen on val travel with
    the checkpoint: reloaded, it predicts the test figures the stage wrote. The stack's end
    slices are drawn as often as ``oversample_ends`` says."""
    root, params, _ = trained
    shutil.copytree(root / "prepared", tmp_path / "prepared")
    seg = params.segmenters
    train = seg.train.model_copy(update={"context_slices": 1, "oversample_ends": 3.0})
    made: list[TensorDataModule] = []

    def recorded(*args: Any, **kw: Any) -> TensorDataModule:
        made.append(segmenter_data(*args, **kw))
        return made[-1]

    monkeypatch.setattr(stage, "segmenter_data", recorded)
    params = params.model_copy(
        update={
            "acdc": params.acdc.model_copy(update={"prepared": str(tmp_path / "prepared")}),
            "segmenters": seg.model_copy(update={"train": train}),
            "acdcseg": AcdcSegParams(folds=1),
        }
    )
    result = train_segmenter(params, "unet", root=tmp_path)
    train_meta = load_split(tmp_path / "prepared" / "train.npz").meta
    assert len(made) == 1 and made[0].train_weights is not None
    assert made[0].train_weights.tolist() == end_weights(train_meta, 3.0).tolist()
    module = load_segmenter(tmp_path / "models/segmenters/unet.ckpt").eval()
    assert context_of(module) == 1 and module.net.model[0].conv.in_channels == 3
    cleanup = cleanup_of(module)
    assert cleanup.method in METHODS and cleanup.min_pixels in MIN_PIXELS
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [mlflow.get_experiment_by_name(EXPERIMENT).experiment_id]
    )[0]
    assert Cleanup.from_tags(run.data.tags) == cleanup
    assert run.data.tags["predict_flips"] == str(flips_of(module))
    scores = {
        key.removeprefix("val_dice_mean_postprocess_"): value
        for key, value in run.data.metrics.items()
        if key.startswith("val_dice_mean_postprocess_")
    }
    # each clean-up with and without the step across slices, on plain and flip-averaged output
    assert len(scores) == len(METHODS) * len(MIN_PIXELS) * 2 * 2
    chosen = ("flips_" if flips_of(module) else "") + cleanup.name
    assert scores[chosen] == max(scores.values())
    test = load_split(tmp_path / "prepared" / "test.npz")
    pred = predict_labels(module, test, train.trainer)
    assert evaluate(pred, test)["dice_mean"] == pytest.approx(result["dice_mean"], nan_ok=True)
