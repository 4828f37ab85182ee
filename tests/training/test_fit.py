"""The shared fit runner: best/last checkpoints, resume, early stopping, logging to a given run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from seglab.config import NvaeParams, SegmenterNetsParams, TrainerParams, UNetParams
from seglab.models.segmenters import build_segmenter
from seglab.training.datamodule import TensorDataModule
from seglab.training.fit import fit, predict, resolve_precision
from seglab.training.nvae_module import NvaeModule
from seglab.training.segmentation_module import SegmentationModule

NETS = SegmenterNetsParams(unet=UNetParams(channels=(4, 8)))


def _module(lr: float = 1e-2) -> SegmentationModule:
    return SegmentationModule(build_segmenter("unet", NETS), 4, lr=lr)


def _data() -> TensorDataModule:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 16, 16, generator=gen)
    labels = (images[:, 0] * 4).clamp(max=3).to(torch.uint8)  # learnable: label = intensity bin
    return TensorDataModule({"train": (images, labels), "val": (images, labels)}, batch_size=4)


class EpochLog(L.Callback):
    """Which epochs ran, and the monitored value after each validation."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.scores: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The epoch's validation has run by now (the module's own epoch-end hook included).
        self.scores.append(float(trainer.callback_metrics["val_dice_mean"]))


def _params(**kwargs: object) -> TrainerParams:
    return TrainerParams(accelerator="cpu", batch_size=4, **kwargs)  # type: ignore[arg-type]


def test_keeps_the_best_epoch_and_the_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = EpochLog()
    module = _module()
    monkeypatch.setattr(module, "configure_callbacks", lambda: [log])
    result = fit(module, _data(), _params(max_epochs=3), tmp_path, monitor="val_dice_mean")
    assert result.best_path == tmp_path / "best.ckpt" and result.best_path.is_file()
    assert result.last_path.is_file() and result.resumed_from is None
    assert result.epochs == 3 and log.epochs == [0, 1, 2]
    assert result.best_score == pytest.approx(max(log.scores))
    best_epoch = torch.load(result.best_path, weights_only=False)["epoch"]
    assert best_epoch == log.scores.index(max(log.scores))
    assert result.train_seconds > 0
    assert result.kept_path == result.best_path  # keep: best, the default


def test_keep_last_names_the_last_epoch(tmp_path: Path) -> None:
    # lr 0: the best epoch is the first, so the kept checkpoint differs from it only by the rule.
    params = _params(max_epochs=2, keep="last")
    result = fit(_module(lr=0.0), _data(), params, tmp_path, monitor="val_dice_mean")
    assert result.kept_path == result.last_path == tmp_path / "last.ckpt"
    assert torch.load(result.kept_path, weights_only=False)["epoch"] == 1


def test_weight_averaging_checkpoints_hold_the_weights_their_score_was_measured_with(
    tmp_path: Path,
) -> None:
    result = fit(
        _module(), _data(), _params(max_epochs=3, ema_decay=0.5), tmp_path, monitor="val_dice_mean"
    )
    best = torch.load(result.best_path, weights_only=False)
    raw, averaged = best["current_model_state"], best["state_dict"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in averaged)  # two sets of weights
    module = _module()
    module.load_state_dict(averaged)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    score = trainer.validate(module, datamodule=_data(), verbose=False)[0]["val_dice_mean"]
    assert score == pytest.approx(result.best_score)


def test_weight_averaging_resumes_where_it_stopped(tmp_path: Path) -> None:
    # Two batches per epoch: the average of an uninterrupted 3-epoch fit counts 6 steps; a
    # resume that started a fresh average would count only the 4 steps after the cut.
    params = _params(max_epochs=3, ema_decay=0.5)
    whole = fit(_module(), _data(), params, tmp_path / "whole", monitor="val_dice_mean")
    fit(
        _module(),
        _data(),
        _params(max_epochs=1, ema_decay=0.5),
        tmp_path / "cut",
        monitor="val_dice_mean",
    )
    resumed = fit(_module(), _data(), params, tmp_path / "cut", monitor="val_dice_mean")
    assert resumed.resumed_from is not None
    steps = [
        torch.load(r.last_path, weights_only=False)["averaging_state"]["n_averaged"]
        for r in (whole, resumed)
    ]
    assert steps == [6, 6]


def test_resumes_from_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fit(_module(), _data(), _params(max_epochs=1), tmp_path, monitor="val_dice_mean")
    log = EpochLog()
    module = _module()
    monkeypatch.setattr(module, "configure_callbacks", lambda: [log])
    result = fit(module, _data(), _params(max_epochs=3), tmp_path, monitor="val_dice_mean")
    assert result.resumed_from == tmp_path / "last.ckpt"
    assert log.epochs == [1, 2]  # epoch 0 was not trained again
    assert result.epochs == 3
    assert torch.load(result.last_path, weights_only=False)["epoch"] == 2


def test_last_is_the_last_epoch_when_the_best_is_older(tmp_path: Path) -> None:
    # lr 0: the Dice never improves after epoch 0, so only last.ckpt is written after it; a kill
    # after epoch 2 must resume at epoch 3, not train epochs 1-2 again from the best's state.
    params = _params(max_epochs=3)
    result = fit(_module(lr=0.0), _data(), params, tmp_path, monitor="val_dice_mean")
    last = torch.load(result.last_path, weights_only=False)
    best = torch.load(result.best_path, weights_only=False)
    assert (last["epoch"], best["epoch"]) == (2, 0)
    assert "optimizer_states" in last and "optimizer_states" not in best  # best: weights only
    log = EpochLog()
    module = _module(lr=0.0)
    module.configure_callbacks = lambda: [log]  # type: ignore[method-assign]
    fit(module, _data(), _params(max_epochs=4), tmp_path, monitor="val_dice_mean")
    assert log.epochs == [3]


def test_early_stopping_ends_a_run_that_stopped_improving(tmp_path: Path) -> None:
    # lr 0: the weights never change, so the validation Dice never improves after epoch 0.
    result = fit(
        _module(lr=0.0),
        _data(),
        _params(max_epochs=20, early_stopping_patience=2),
        tmp_path,
        monitor="val_dice_mean",
    )
    assert result.epochs == 3


def test_a_time_budget_ends_the_fit_before_its_epochs(tmp_path: Path) -> None:
    # 1000 epochs would take minutes; a 1.2-second budget stops after a few.
    result = fit(
        _module(),
        _data(),
        _params(max_epochs=1000, max_minutes=0.02),
        tmp_path,
        monitor="val_dice_mean",
    )
    assert 1 <= result.epochs < 1000 and result.best_path.is_file()


def test_metrics_go_into_the_given_run_and_the_run_stays_open(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
    run_id = client.create_run(experiment).info.run_id
    fit(
        _module(),
        _data(),
        _params(max_epochs=2),
        tmp_path / "ckpt",
        monitor="val_dice_mean",
        run_id=run_id,
        tracking_uri=uri,
    )
    run = client.get_run(run_id)
    assert run.info.status == RunStatus.to_string(RunStatus.RUNNING)
    for key in ("train_loss", "val_loss", "val_dice_mean", "val_dice_3", "lr-Adam"):
        history = client.get_metric_history(run_id, key)
        assert len(history) == 2, key  # one value per epoch
    assert len(client.search_runs([experiment])) == 1  # no second run was opened


def test_precision_auto_is_fp32_on_a_cpu_and_explicit_values_are_kept() -> None:
    assert resolve_precision(TrainerParams(accelerator="cpu")) == "32-true"
    assert resolve_precision(TrainerParams(precision="bf16-mixed")) == "bf16-mixed"
    if not torch.cuda.is_available():
        assert resolve_precision(TrainerParams()) == "32-true"


def test_predict_returns_label_maps_in_input_order() -> None:
    module = _module()
    images = torch.rand(10, 1, 16, 16)
    labels = predict(module, images, _params(), batch_size=4)
    assert labels.shape == (10, 16, 16) and labels.dtype == torch.uint8
    with torch.no_grad():
        expected = module(images).argmax(dim=1).to(torch.uint8)
    assert torch.equal(labels, expected)


def _state_keys(path: Path) -> list[str]:
    return sorted(torch.load(path, weights_only=False)["state_dict"])


def test_channels_last_and_threads_apply_and_checkpoints_keep_their_keys(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    module = _module()
    try:
        result = fit(
            module,
            _data(),
            _params(max_epochs=1, channels_last=True, threads=1),
            tmp_path,
            monitor="val_dice_mean",
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    convs = [m.weight for m in module.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert _state_keys(result.best_path) == sorted(_module().state_dict())


def test_nvae_trains_in_channels_last(tmp_path: Path) -> None:
    params = NvaeParams(
        stem_channels=2,
        preprocess_blocks=1,
        groups_per_scale=(1, 1),
        beta=(1.0, 1.0),
        latent_channels=2,
        kl_warmup_steps=0,
    )
    masks = torch.zeros(4, 4, 32, 32)
    masks[:, 0] = 1.0
    masks[:, 0, 8:24, 8:24], masks[:, 3, 8:24, 8:24] = 0.0, 1.0
    data = TensorDataModule(
        {"train": (masks, masks.argmax(1)), "val": (masks, masks.argmax(1))}, batch_size=2
    )
    module = NvaeModule(params, image_size=32)
    result = fit(
        module,
        data,
        _params(max_epochs=1, channels_last=True),
        tmp_path,
        monitor="val_loss",
        mode="min",
    )
    assert result.best_path.is_file() and result.best_score is not None
    assert torch.isfinite(torch.tensor(result.best_score))


@pytest.mark.slow
def test_compiled_network_trains_predicts_like_eager_and_saves_plain_keys(tmp_path: Path) -> None:
    module = _module()
    result = fit(
        module, _data(), _params(max_epochs=1, compile=True), tmp_path, monitor="val_dice_mean"
    )
    assert _state_keys(result.best_path) == sorted(_module().state_dict())
    eager = _module()
    eager.load_state_dict(module.state_dict())
    images = torch.rand(6, 1, 16, 16)
    compiled = predict(module, images, _params(compile=True), batch_size=3)
    assert torch.equal(compiled, predict(eager, images, _params(), batch_size=3))


def test_every_epoch_prints_one_progress_line_with_the_monitored_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = fit(_module(), _data(), _params(max_epochs=3), tmp_path, monitor="val_dice_mean")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    best = max(row["val_dice_mean"] for row in result.history)
    assert f"(best {best:.4g} @" in lines[-1] and lines[-1].endswith("0.0 min left")
    assert all("train_loss" in line and "val_loss" in line and "s/epoch" in line for line in lines)
