"""NvaeModule under a real Lightning Trainer: logs, optimiser, checkpoints, resume, divergence."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from tests.helpers import tiny_nvae
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from seglab.config import NvaeParams
from seglab.models.nvae import KLDivergenceError
from seglab.training.nvae_module import MONITOR, NvaeModule

SIZE = 32


def _params(**overrides: object) -> NvaeParams:
    base = dict(stem_channels=4, latent_channels=4, beta=(1.0, 2.0), kl_warmup_steps=10)
    return tiny_nvae(**{**base, **overrides})


def _loader(n: int = 8, batch: int = 4, seed: int = 0) -> DataLoader:
    labels = torch.randint(0, 4, (n, SIZE, SIZE), generator=torch.Generator().manual_seed(seed))
    masks = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    return DataLoader(TensorDataset(masks, masks), batch_size=batch)


def _trainer(tmp_path: Path, **kwargs: object) -> L.Trainer:
    base = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**base, **kwargs})


def test_fast_dev_run(tmp_path: Path) -> None:
    module = NvaeModule(_params(), image_size=SIZE)
    trainer = _trainer(tmp_path, fast_dev_run=True)
    trainer.fit(module, _loader(), _loader(seed=1))
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_logs_every_step_and_validation_dice(tmp_path: Path) -> None:
    module = NvaeModule(_params(spectral_lambda=0.1), image_size=SIZE)
    trainer = _trainer(
        tmp_path, max_epochs=2, logger=CSVLogger(tmp_path, name="log"), log_every_n_steps=1
    )
    trainer.fit(module, _loader(), _loader(seed=1))
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [r for r in rows if r.get("train_loss")]
    assert len(steps) == 4  # 2 epochs x 2 batches, one row per step
    for key in ("recon", "kl_total", "kl_scale_0", "kl_scale_1", "kl_weighted", "spectral"):
        assert all(r[f"train_{key}"] for r in steps), key
    coeffs = [float(r["train_kl_coeff"]) for r in steps]
    assert coeffs[0] == pytest.approx(1e-4) and coeffs == sorted(coeffs) and coeffs[-1] < 1
    assert all(float(r["train_spectral"]) > 0 for r in steps)
    epochs = [r for r in rows if r.get("val_loss")]
    assert len(epochs) == 2
    for key in ("val_recon", "val_kl_scale_0", "val_dice_lv", "val_dice_myo", "val_dice_rv"):
        assert all(r[key] for r in epochs), key
    assert all(0.0 <= float(r["val_dice_mean"]) <= 1.0 for r in epochs)
    assert "spectral.u0" in module.state_dict()


def test_study_optimiser_and_cosine_schedule(tmp_path: Path) -> None:
    module = NvaeModule(_params(), image_size=SIZE)
    trainer = _trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    trainer.fit(module, _loader())
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.Adamax)
    group = optimizer.param_groups[0]
    assert group["initial_lr"] == 1e-2 and group["eps"] == 1e-3
    assert group["weight_decay"] == 3e-4 and tuple(group["betas"]) == (0.9, 0.99)
    scheduler = trainer.lr_scheduler_configs[0]
    assert scheduler.interval == "step" and scheduler.scheduler.T_max == 4
    assert group["lr"] == pytest.approx(1e-4)  # annealed to lr_min at the last step


def test_checkpoint_round_trip_and_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = NvaeModule(_params(), image_size=SIZE)
    ckpt_dir = tmp_path / "ckpt"
    trainer = _trainer(
        tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[best_and_last(ckpt_dir)]
    )
    trainer.fit(module, _loader(), _loader(seed=1))
    assert (ckpt_dir / "best.ckpt").is_file() and (ckpt_dir / "last.ckpt").is_file()

    loaded = NvaeModule.load_from_checkpoint(ckpt_dir / "best.ckpt")
    assert loaded.params == module.params and loaded.model.image_size == SIZE
    x = next(iter(_loader(seed=2)))[0]
    module.eval()
    loaded.eval()
    assert torch.equal(module(x, sample=False).logits, loaded(x, sample=False).logits)

    resumed = NvaeModule(_params(), image_size=SIZE)
    trainer2 = _trainer(
        tmp_path, max_epochs=2, enable_checkpointing=True, callbacks=[best_and_last(ckpt_dir)]
    )
    trainer2.fit(resumed, _loader(), _loader(seed=1), ckpt_path=ckpt_dir / "last.ckpt")
    assert trainer2.global_step == 4  # continued from step 2, not restarted


def test_divergence_stops_training_with_its_own_error(tmp_path: Path) -> None:
    module = NvaeModule(_params(), image_size=SIZE)
    masks = next(iter(_loader()))[0].clone()
    masks[0, 0, 0, 0] = float("nan")
    bad = DataLoader(TensorDataset(masks, masks), batch_size=4)
    with pytest.raises(KLDivergenceError, match="at step 0"):
        _trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(module, bad)


def best_and_last(folder: Path) -> ModelCheckpoint:
    """The lowest-val_loss checkpoint and the last one, as the trainers keep them."""
    return ModelCheckpoint(dirpath=folder, filename="best", monitor=MONITOR, save_last=True)
