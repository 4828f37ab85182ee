"""The shared segmentation module: every architecture trains, metrics mean what they say,
augmentation touches training batches only, binary (sigmoid) mode works for the brain study."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Timer
from tests.helpers import TINY
from torch import nn

from seglab.config import (
    AugmentParams,
)
from seglab.models.segmenters import ARCHS, build_segmenter
from seglab.training.datamodule import TensorDataModule
from seglab.training.segmentation_module import (
    FLIPS,
    SegmentationModule,
    flip_averaged_softmax,
    lr_factor,
)

NAMES = {3: "lv", 2: "myo", 1: "rv"}


def _data(n: int = 8, size: int = 64, classes: int = 4) -> TensorDataModule:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=gen)
    labels = torch.randint(0, max(2, classes), (n, size, size), generator=gen, dtype=torch.uint8)
    return TensorDataModule({"train": (images, labels), "val": (images, labels)}, batch_size=4)


def _trainer(**kwargs: object) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_trains_one_step(arch: str) -> None:
    module = SegmentationModule(
        build_segmenter(arch, TINY), 4, class_names=NAMES, augment=AugmentParams()
    )
    trainer = _trainer(fast_dev_run=True)
    trainer.fit(module, datamodule=_data())
    logged = trainer.callback_metrics
    for key in ("train_loss", "val_loss", "val_dice_mean", "val_dice_lv", "val_dice_myo",
                "val_dice_rv", "val_iou_mean", "val_accuracy"):  # fmt: skip
        assert key in logged, key
    assert 0.0 <= float(logged["val_dice_mean"]) <= 1.0
    assert module.monitor == "val_dice_mean"


class OneHotOracle(nn.Module):
    """Logits = the one-hot input itself: the argmax is whatever label map was encoded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 10.0


def _onehot(labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.one_hot(labels.long(), 4).permute(0, 3, 1, 2).float()


def test_validation_metrics_of_a_perfect_and_of_a_known_prediction() -> None:
    labels = torch.zeros(4, 8, 8, dtype=torch.uint8)
    labels[:, 2:6, 2:6] = 3  # LV everywhere, no RV or MYO in the ground truth
    labels[0, 2:4, 2:4] = 2
    module = SegmentationModule(OneHotOracle(), 4, class_names=NAMES)
    (perfect,) = _trainer().validate(
        module, torch.utils.data.DataLoader(list(zip(_onehot(labels), labels, strict=True)))
    )
    assert perfect["val_dice_lv"] == pytest.approx(1.0)
    assert perfect["val_dice_myo"] == pytest.approx(1.0)
    assert math.isnan(perfect["val_dice_rv"])  # absent from every slice and every prediction
    assert perfect["val_dice_mean"] == pytest.approx(1.0)
    assert perfect["val_accuracy"] == pytest.approx(1.0)

    # Predict RV on one slice where the ground truth has none: Dice 0 there (a false positive).
    pred = labels.clone()
    pred[1, 0, 0] = 1
    batches = list(zip(_onehot(pred), labels, strict=True))
    (metrics,) = _trainer().validate(module, torch.utils.data.DataLoader(batches))
    assert metrics["val_dice_rv"] == pytest.approx(0.0)
    assert metrics["val_dice_lv"] == pytest.approx(1.0)
    assert metrics["val_dice_mean"] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics["val_accuracy"] == pytest.approx(1 - 1 / (4 * 64))


class CountingAugment(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        return image, label


def test_augmentation_applies_to_training_batches_only() -> None:
    module = SegmentationModule(build_segmenter("unet", TINY), 4, augment=AugmentParams())
    counter = CountingAugment()
    module.augment = counter  # type: ignore[assignment]
    data = _data()
    _trainer().validate(module, datamodule=data)
    _trainer().predict(module, dataloaders=data.val_dataloader())
    assert counter.calls == 0
    _trainer(max_epochs=1, limit_val_batches=1).fit(module, datamodule=data)
    assert counter.calls == 2  # 8 slices, batches of 4


def test_augmentation_leaves_the_fixed_channels_as_they_are() -> None:
    strong = AugmentParams(rotate_deg=45.0, intensity_p=1.0, brightness=0.5, noise_std=0.1)
    module = SegmentationModule(
        build_segmenter("unet", TINY, in_channels=4), 4, augment=strong, fixed_channels=1
    )
    module.trainer = L.Trainer(accelerator="cpu", logger=False)
    module.trainer.training = True
    image = torch.rand(4, 4, 32, 32)
    image[:, 3] = torch.tensor([0.0, 0.25, 0.5, 1.0])[:, None, None]
    out, label = module.on_after_batch_transfer((image, torch.zeros(4, 32, 32)), 0)
    assert out.shape == image.shape and label.shape == (4, 32, 32)
    assert torch.equal(out[:, 3], image[:, 3]) and not torch.equal(out[:, :3], image[:, :3])


def test_binary_sigmoid_mode_for_the_brain_study() -> None:
    module = SegmentationModule(build_segmenter("unet", TINY, num_classes=1), 1)
    assert module.monitor == "val_iou"
    trainer = _trainer(fast_dev_run=True)
    trainer.fit(module, datamodule=_data(classes=1))
    for key in ("val_dice", "val_iou", "val_accuracy", "val_loss", "train_loss"):
        assert key in trainer.callback_metrics, key
    pred = module.predict_step(torch.rand(3, 1, 64, 64), 0)
    assert pred.dtype == torch.uint8 and pred.shape == (3, 64, 64)
    assert set(pred.unique().tolist()) <= {0, 1}


class _LeftHeavy(nn.Module):
    """Logits that favour class 1 on the left half of the image: not flip-symmetric."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(1.0, -1.0, x.shape[-1]).expand_as(x[:, 0])
        return torch.stack([torch.zeros_like(ramp), ramp + x[:, 0]], dim=1)


def test_flips_average_the_softmax_of_the_four_flipped_images_flipped_back() -> None:
    image = torch.rand(2, 1, 8, 8)
    net = _LeftHeavy()
    manual = sum(
        net(image.flip(d)).softmax(1).flip(d) if d else net(image).softmax(1) for d in FLIPS
    )
    averaged = flip_averaged_softmax(net, image)
    assert torch.allclose(averaged, manual / 4) and torch.allclose(averaged.sum(1), torch.ones(1))
    # the ramp cancels out over the left-right flips: only the image decides
    assert torch.equal(averaged.argmax(1), (image[:, 0] > 0).long())
    module = SegmentationModule(net, 2)
    assert torch.equal(module.predict_step(image, 0), net(image).argmax(1).to(torch.uint8))
    module.hparams["flips"] = True
    assert torch.equal(module.predict_step(image, 0), averaged.argmax(1).to(torch.uint8))


@pytest.mark.parametrize("loss", ["dice_ce", "dice", "ce"])
def test_loss_choice_and_gradients(loss: str) -> None:
    module = SegmentationModule(build_segmenter("unet", TINY), 4, loss=loss)  # type: ignore[arg-type]
    labels = torch.randint(0, 4, (2, 32, 32), dtype=torch.uint8)
    value = module.loss(module(torch.rand(2, 1, 32, 32)), module._target(labels))
    value.backward()
    assert value.item() > 0
    assert all(p.grad is not None for p in module.net.parameters())


def test_checkpoint_round_trip_keeps_weights_and_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    module = SegmentationModule(
        build_segmenter("attunet", TINY),
        4,
        lr=3e-4,
        class_names=NAMES,
        augment=AugmentParams(rotate_deg=5.0),
        hparams={"arch": "attunet"},
    )
    trainer = _trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=_data())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = SegmentationModule.load_from_checkpoint(
        path, net=build_segmenter("attunet", TINY), map_location="cpu"
    )
    assert loaded.lr == 3e-4 and loaded.class_names == module.class_names
    assert loaded.augment is not None and loaded.augment.params.rotate_deg == 5.0
    for (name, a), b in zip(module.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_warmup_then_decay_to_zero(schedule: str) -> None:
    factors = [lr_factor(step, 100, 10, schedule) for step in range(101)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warm-up
    assert factors[10] == 1.0 and factors[100] == 0.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))  # decays
    assert lr_factor(50, 100, 0, "constant") == 1.0


def test_a_wall_time_budget_spent_first_ends_the_decay() -> None:
    # Half the steps and a quarter of the minutes: the steps lead; then the minutes overtake.
    assert lr_factor(60, 110, 10, "cosine", time_used=0.25) == pytest.approx(0.5)
    assert lr_factor(60, 110, 10, "cosine", time_used=0.75) < lr_factor(60, 110, 10, "cosine")
    assert lr_factor(11, 110, 10, "poly", time_used=1.0) == 0.0
    assert lr_factor(5, 110, 10, "cosine", time_used=0.9) == pytest.approx(0.6)  # warm-up first
    assert lr_factor(60, 110, 0, "constant", time_used=0.9) == 1.0


def test_the_schedule_reads_the_trainers_clock_resumed_trainings_included() -> None:
    module = SegmentationModule(
        build_segmenter("unet", TINY), 4, lr=1e-2, schedule="cosine", warmup_epochs=0.0
    )
    trainer = _trainer(max_epochs=1000, max_time={"minutes": 2}, limit_val_batches=0)
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    timer.load_state_dict({"time_elapsed": {"train": 60.0}})  # a resumed half of the budget
    module.trainer = trainer
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-2 * 0.5, rel=1e-3)  # cos(pi/2)


def test_adamw_with_a_per_step_schedule_is_what_the_trainer_steps() -> None:
    module = SegmentationModule(
        build_segmenter("unet", TINY),
        4,
        lr=1e-2,
        optimizer="adamw",
        weight_decay=0.01,
        schedule="cosine",
        warmup_epochs=1.0,
    )
    trainer = _trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(module, datamodule=_data())  # 8 slices, batch 4: 2 steps per epoch
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # decayed to zero
    assert module.hparams["schedule"] == "cosine" and module.hparams["optimizer"] == "adamw"


def test_sgd_is_nnunets_nesterov_momentum_under_its_poly_decay() -> None:
    module = SegmentationModule(
        build_segmenter("unet", TINY),
        4,
        lr=1e-2,
        optimizer="sgd",
        weight_decay=3e-5,
        schedule="poly",
    )
    trainer = _trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(module, datamodule=_data())
    group = trainer.optimizers[0].param_groups[0]
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.99, True, 3e-5)
    assert group["lr"] == pytest.approx(0.0, abs=1e-12)  # (1 - t)^0.9 ends at zero


def test_batch_dice_penalises_a_structure_predicted_where_a_slice_has_none() -> None:
    """Per slice, the structure's own Dice term is saturated on a slice without it (only the
    background's term pushes a false positive back); pooled over the batch it pushes too."""
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1  # slice 0 has the structure, slice 1 has none
    logits = torch.zeros(2, 2, 8, 8)
    logits[0, 1] = 5 * (target[0, 0] * 2 - 1)  # slice 0 right
    logits[1, 1, 0:2, 0:2] = 1.0  # slice 1: a false positive
    grads = {}
    for batch_dice in (False, True):
        module = SegmentationModule(nn.Identity(), 2, loss="dice", batch_dice=batch_dice)
        x = logits.clone().requires_grad_(True)
        module.loss(x, target).backward()
        grads[batch_dice] = x.grad[1, 1, 0:2, 0:2].abs().sum().item()  # type: ignore[union-attr]
    assert grads[True] > 1.5 * grads[False]
