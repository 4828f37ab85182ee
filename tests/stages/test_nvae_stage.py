"""The NVAE stage: input tensors, the reusable training core (resume, divergence), and the
tracked DVC stage end to end on a small generated prepared set (slow)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from tests.helpers import tiny_nvae

from seglab.cli import main
from seglab.config import CardiacParams, NvaeParams, TrainerParams, load_params
from seglab.data.acdcseg import nvae_tensors
from seglab.data.phantom.masks import heart_masks, heart_slices
from seglab.data.store import SliceSet, load_split, save_split
from seglab.errors import ConfigError, SeglabError
from seglab.inference.nvae import NvaeReconstructor, load_nvae
from seglab.models.nvae import KLDivergenceError, kl_coefficient
from seglab.stages import nvae as stage
from seglab.stages.common import nvae_work_dir
from seglab.stages.nvae import train_nvae
from seglab.tracking import dvc_hash
from seglab.tracking.registry import load_model
from seglab.training.nvae_fit import train_nvae_model
from seglab.training.nvae_module import NvaeModule

SIZE = 32


def hearts(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size] label maps: LV disc in a MYO ring, an RV crescent beside it."""
    return heart_masks(n, size, seed)


def slice_set(n: int, size: int = SIZE, seed: int = 0, patients: int = 2) -> SliceSet:
    """A prepared split: ``patients`` volumes of ED slices, base to apex."""
    return heart_slices(n, size, seed, patients)


def tiny_params(**overrides: object) -> NvaeParams:
    return tiny_nvae(**{"kl_warmup_steps": 2, **overrides})


def trainer_params(**overrides: object) -> TrainerParams:
    base = dict(max_epochs=2, batch_size=4, accelerator="cpu", devices=1)
    return TrainerParams(**{**base, **overrides})


class StopAfterFirstEpoch(L.Callback):
    """An interruption after the first epoch: the second call must pick up from there."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.should_stop = True


# ---------------------------------------------------------------- input tensors


def test_nvae_tensors_gt_pred_context() -> None:
    slices = slice_set(6)
    pred = slices.label[::-1].copy()
    context = np.stack([np.zeros_like(pred), pred, slices.label], axis=1)
    slices.extra.update(pred=pred, context=context)

    x, y = nvae_tensors(slices, "gt")
    assert x.shape == y.shape == (6, 4, SIZE, SIZE) and x.dtype == torch.float32
    assert torch.equal(x.sum(1), torch.ones(6, SIZE, SIZE))  # one-hot
    assert torch.equal(y.argmax(1), torch.from_numpy(slices.label).long())

    x, y = nvae_tensors(slices, "pred")
    assert x.shape == (6, 4, SIZE, SIZE)
    assert torch.equal(x.argmax(1), torch.from_numpy(pred).long())
    assert torch.equal(y.argmax(1), torch.from_numpy(slices.label).long())

    x, y = nvae_tensors(slices, "context", dtype=torch.uint8)
    assert x.shape == (6, 12, SIZE, SIZE) and x.dtype == torch.uint8 and y.shape[1] == 4
    assert torch.equal(x.sum(1), torch.full((6, SIZE, SIZE), 3, dtype=torch.uint8))
    assert x[:, 0].all()  # the "EOS" map before: all background
    assert torch.equal(x[:, 4:8].argmax(1), torch.from_numpy(pred).long())


def test_nvae_tensors_refuses_a_missing_source() -> None:
    with pytest.raises(SeglabError, match="needs ACDCSeg rows"):
        nvae_tensors(slice_set(2), "pred")
    with pytest.raises(SeglabError, match="needs 3-gram rows"):
        nvae_tensors(slice_set(2), "context")


def test_reconstructor_returns_posterior_mean_logits() -> None:
    module = NvaeModule(tiny_params(), SIZE).eval()
    x, _ = nvae_tensors(slice_set(3))
    logits = NvaeReconstructor(module.model)(x)
    assert logits.shape == (3, 4, SIZE, SIZE)
    assert torch.equal(logits, module(x, sample=False).logits)


# ---------------------------------------------------------------- training core


def _data(n: int = 8) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        "train": nvae_tensors(slice_set(n, seed=0)),
        "val": nvae_tensors(slice_set(4, seed=1)),
    }


def test_train_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    first = train_nvae_model(
        tiny_params(), trainer_params(), _data(), folder, callbacks=[StopAfterFirstEpoch()]
    )
    assert first.epochs == 1 and first.resumed_from is None and len(first.history) == 1
    assert (folder / "last.ckpt").is_file() and first.kept_path == folder / "best.ckpt"

    second = train_nvae_model(tiny_params(), trainer_params(), _data(), folder)
    assert second.resumed_from == folder / "last.ckpt"
    assert second.epochs == 2
    rows = second.history
    assert [r["epoch"] for r in rows] == [0, 1]  # the first epoch's row came with the checkpoint
    assert [r["step"] for r in rows] == [2, 4]  # 8 slices / batch 4: continued, not restarted
    assert rows[1]["seconds"] > rows[0]["seconds"] > 0  # one clock across both calls
    assert all(np.isfinite(r["val_loss"]) and np.isfinite(r["train_loss"]) for r in rows)
    timings = second.timings()
    assert timings["epochs_to_best"] in (1, 2)
    assert timings["seconds_per_epoch"] == pytest.approx(rows[1]["seconds"] / 2)
    assert not second.module.training
    assert second.best_val_loss == pytest.approx(min(r["val_loss"] for r in rows))


def test_train_checks_input_channels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="in_channels is 12"):
        train_nvae_model(tiny_params(in_channels=12), trainer_params(), _data(), tmp_path)


def test_divergence_surfaces_as_its_own_error(tmp_path: Path) -> None:
    data = _data()
    x, y = data["train"]
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    data["train"] = (x, y)
    with pytest.raises(KLDivergenceError, match=r"diverged at step \d \(loss=nan.*kl_scale_0="):
        train_nvae_model(tiny_params(), trainer_params(max_epochs=1), data, tmp_path)


# ---------------------------------------------------------------- the DVC stage


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder: prepared splits of generated hearts at 64x64, tiny NVAE params."""
    root = tmp_path_factory.mktemp("nvae-project")
    size = 64
    for split, (n, seed) in {"train": (16, 0), "val": (8, 1), "test": (8, 2)}.items():
        save_split(root / "prepared" / f"{split}.npz", slice_set(n, size, seed))
    params = {
        "acdc": {"prepared": "prepared", "prepare": {"size": size}},
        "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
        "nvae": {
            "model": {
                "stem_channels": 2,
                "groups_per_scale": [1, 1, 1],
                "latent_channels": 4,
                "kl_warmup_steps": 4,
            },
            "trainer": {"max_epochs": 2, "batch_size": 8, "accelerator": "cpu", "devices": 1},
            "log_every_n_steps": 1,
            "samples": 8,
            "figure_rows": 2,
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.mark.slow
def test_stage_trains_resumes_evaluates_logs_and_registers(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = load_params(project / "params.yaml", CardiacParams)
    cfg = params.nvae
    # An interrupted earlier run of the same settings: the stage must continue it.
    md5 = str(dvc_hash(Path("prepared"), project))
    splits = {s: load_split(project / "prepared" / f"{s}.npz") for s in ("train", "val")}
    work = nvae_work_dir(cfg, project, md5)
    train_nvae_model(
        cfg.model,
        cfg.trainer,
        {s: nvae_tensors(v) for s, v in splits.items()},
        work,
        callbacks=[StopAfterFirstEpoch()],
    )

    result = train_nvae(params, root=project, params_file=project / "params.yaml")

    assert result["resumed_from"] == str(work / "last.ckpt") and result["epochs"] == 2
    assert not work.exists()  # removed once the stage succeeded
    for key in ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "anatomical_validity"):
        assert 0.0 <= result[key] <= 1.0, key
    assert 0.0 <= result["sample_validity"] <= 1.0 and result["target_validity"] == 1.0
    assert result["epochs_to_best"] in (1, 2) and result["seconds_per_epoch"] > 0

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "nvae-stem2-beta8-10-11"
    assert client.get_experiment(run.info.experiment_id).name == "acdc-nvae"
    for key in (
        "dice_mean",
        "dice_lv",
        "dice_myo",
        "dice_rv",
        "anatomical_validity",
        "sample_validity",
        "train_seconds",
        "seconds_to_best",
    ):
        assert key in run.data.metrics, key
    # per-step curves: the resumed epoch's 2 steps (16 slices / batch 8), log_every_n_steps 1
    for key in (
        "train_loss",
        "train_recon",
        "train_kl_scale_0",
        "train_kl_scale_2",
        "train_kl_coeff",
    ):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [2, 3], key
    coeffs = [m.value for m in client.get_metric_history(run.info.run_id, "train_kl_coeff")]
    assert coeffs == pytest.approx([kl_coefficient(s, 4, 1e-4) for s in (2, 3)])
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/reconstructions.png", "plots/samples.png", "plots/curves.csv"} <= artifacts

    version = client.get_model_version("acdc-nvae", result["model_version"])
    assert version.run_id == run.info.run_id
    assert version.tags["eval.split"] == "test" and version.tags["eval.dataset_md5"] == md5
    assert version.tags["stem_channels"] == "2" and version.tags["beta"] == "8,10,11"
    assert client.get_model_version_by_alias("acdc-nvae", "challenger").version == version.version
    model = load_model(f"models:/acdc-nvae/{version.version}", params.tracking, project)
    x, _ = nvae_tensors(load_split(project / "prepared" / "test.npz"))
    best = load_nvae(project / cfg.models / "nvae.ckpt")
    expected = best(x[:3], sample=False).logits
    torch.testing.assert_close(model(x[:3]), expected, rtol=1e-4, atol=1e-4)

    curves = pd.read_csv(project / cfg.metrics / "curves.csv")
    assert list(curves["epoch"]) == [0, 1] and "val_dice_mean" in curves
    saved = yaml.safe_load((project / cfg.metrics / "nvae.json").read_text())
    assert saved["model_version"] == result["model_version"]
    # the version is an id, not a figure `dvc metrics diff` should compare
    compared = yaml.safe_load((project / cfg.metrics / "nvae.metrics.json").read_text())
    assert "model_version" not in compared and "dice_mean" in compared


@pytest.mark.slow
def test_stage_divergence_fails_the_run_with_one_line(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def diverge(*args: object, **kwargs: object) -> None:
        raise KLDivergenceError(17, {"loss": float("nan"), "kl_scale_0": float("inf")})

    monkeypatch.setattr(stage, "train_nvae_model", diverge)
    monkeypatch.chdir(project)
    assert main(["train", "nvae", "--params", "params.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "diverged at step 17" in err and "kl_scale_0=inf" in err

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("acdc-nvae")
    run = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
    assert run.info.status == "FAILED"
    record = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/divergence.json")
    assert record["step"] == 17 and "kl_scale_0" in record["terms"]
