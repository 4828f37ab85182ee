"""The fit/predict runner every training stage shares: one place that turns ``TrainerParams``
into a Lightning ``Trainer``, keeps the best and last checkpoints, resumes, and logs to MLflow.

- Precision ``auto`` is bf16 mixed precision on a CUDA GPU that supports it (fp16 otherwise) and
  fp32 on a CPU, so the same params run anywhere; ``accelerator``/``devices`` go to Lightning.
- Checkpoints: ``best.ckpt`` (by the monitored metric) and ``last.ckpt`` in ``checkpoint_dir``;
  when ``last.ckpt`` is already there, training resumes from it (an interrupted stage continues
  instead of starting over). The caller decides which folder may be resumed from.
- Speed: ``channels_last``, ``compile`` (the module's ``network``, compiled in place so
  checkpoints keep their keys) and ``threads`` from the params, for fitting and predicting alike.
- History: one row per validation epoch (:class:`~seglab.training.history.EpochHistory`: wall
  time, training loss, every ``val_*`` figure), kept in the checkpoints across resumes.
- Logging: metrics go to an MLflow run the caller opened (``run_id``, passed explicitly); the
  run belongs to the caller, so Lightning never ends it.
- Several devices or machines (``strategy: ddp``, ``devices``, ``num_nodes``): Lightning starts
  (or torchrun/SLURM started) one process per device, each running the same command; the
  validation figures are reduced across them, and after the fit every process but global rank
  0 leaves the stage (:class:`~seglab.errors.WorkerFinished`), so only rank 0 evaluates, logs to
  MLflow, registers and writes outputs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import Logger, MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset

from seglab.config import TrainerParams
from seglab.errors import ConfigError, WorkerFinished
from seglab.io import atomic_file
from seglab.training.history import EpochHistory


@dataclass(frozen=True)
class FitResult:
    """What a finished ``fit`` left behind."""

    best_path: Path  # checkpoint with the best monitored value
    best_score: float | None
    last_path: Path
    kept_path: Path  # the one ``params.keep`` names: what a stage tests and exports
    epochs: int  # epochs completed, counting those before a resume
    train_seconds: float  # wall time of this call's training (not of earlier, resumed runs)
    resumed_from: Path | None
    history: tuple[dict[str, float], ...] = ()  # EpochHistory rows, across resumes


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger, writing into an existing run that it does not own."""

    def finalize(self, status: str) -> None:
        """Leave the run open: its owner (``seglab.tracking.tracked_run``) ends it."""


def resolve_precision(params: TrainerParams) -> str:
    """``params.precision``, with ``auto`` made concrete for the device this process will use."""
    if params.precision != "auto":
        return params.precision
    if params.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def apply_speedups(module: torch.nn.Module, channels_last: bool, compile: bool) -> None:
    """Channels-last memory format and ``torch.compile`` for ``module.network`` (the module
    itself when it has none), in place: ``Module.to`` keeps the format when moving devices, and
    ``Module.compile`` leaves the state-dict keys as they were."""
    network = getattr(module, "network", module)
    if channels_last:
        network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile:
        network.compile()


class Speedups(Callback):
    """Applies :func:`apply_speedups` once per module, before its first step."""

    def __init__(self, channels_last: bool, compile: bool) -> None:
        self.channels_last = channels_last
        self.compile = compile
        self._done: set[int] = set()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if id(pl_module) not in self._done:
            self._done.add(id(pl_module))
            apply_speedups(pl_module, self.channels_last, self.compile)


def eval_device(params: TrainerParams) -> torch.device:
    """Where evaluation outside Lightning runs: the GPU when training may use one and there is
    one, else the CPU."""
    gpu = params.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def default_eval_batch(device: torch.device) -> int:
    """The inference batch when the params give none: 8 on a CPU, where small batches stay in
    its caches (benchmarks/README.md: 2-3x the slices/s of 64 for the NVAE, Attention UNet and
    SwinUNETR), 64 on a GPU."""
    return 8 if device.type == "cpu" else 64


def inference_batch(params: TrainerParams) -> int:
    """The params' ``eval_batch_size``, or the default for the device evaluation runs on."""
    return params.eval_batch_size or default_eval_batch(eval_device(params))


def make_trainer(
    params: TrainerParams,
    *,
    callbacks: Sequence[Callback] = (),
    logger: Logger | bool = False,
    root_dir: Path | None = None,
    devices: int | str | None = None,
    log_every_n_steps: int = 50,
    progress_bar: bool = True,
) -> L.Trainer:
    """A Trainer with the params' accelerator, devices, precision and speed-ups (``devices``
    overrides)."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for the fp32 parts
    if params.threads is not None:
        torch.set_num_threads(params.threads)
    if params.channels_last or params.compile:
        callbacks = [*callbacks, Speedups(params.channels_last, params.compile)]
    return L.Trainer(
        max_epochs=params.max_epochs,
        max_time=timedelta(minutes=params.max_minutes) if params.max_minutes else None,
        limit_train_batches=params.limit_train_batches,
        limit_val_batches=params.limit_val_batches,
        accelerator=params.accelerator,
        devices=params.devices if devices is None else devices,
        strategy=params.strategy if devices is None else "auto",
        num_nodes=params.num_nodes if devices is None else 1,
        precision=resolve_precision(params),  # type: ignore[arg-type]
        callbacks=list(callbacks),
        logger=logger,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        default_root_dir=root_dir,
        log_every_n_steps=log_every_n_steps,
        enable_progress_bar=progress_bar,
        # No validation dry run before training: on a CPU it costs as much as a few training
        # steps, and a broken validation step still fails at the end of the first epoch.
        num_sanity_val_steps=0,
    )


def seed(params: TrainerParams) -> None:
    """Seed Python, NumPy and torch (and loader workers) with the run's seed. Called before a
    model is built as well as before it trains: its initial weights are part of the run."""
    L.seed_everything(params.seed, workers=True, verbose=False)


def fit(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    params: TrainerParams,
    checkpoint_dir: Path,
    *,
    monitor: str,
    mode: Literal["min", "max"] = "max",
    run_id: str | None = None,
    tracking_uri: str | None = None,
    callbacks: Sequence[Callback] = (),
    log_every_n_steps: int = 50,
    progress_bar: bool = False,
) -> FitResult:
    """Train ``module``, keeping ``best.ckpt``/``last.ckpt`` in ``checkpoint_dir``; the result's
    ``kept_path`` is the one ``params.keep`` names.

    With ``run_id`` (and the store's ``tracking_uri``), Lightning logs every metric into that
    MLflow run, the learning rate of each epoch (``lr-<optimiser>``) included. Early stopping
    on ``monitor`` when ``params.early_stopping_patience`` is set.
    ``callbacks`` (an Optuna pruner) are added as they are. ``progress_bar`` adds Lightning's
    bar to the one line per epoch that :class:`EpochHistory` prints.
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    seed(params)
    ema = params.ema_decay is not None
    checkpoint, last_checkpoint = _checkpoints(checkpoint_dir, monitor, mode, weights_only=not ema)
    history = EpochHistory(monitor, mode)
    all_callbacks: list[Callback] = [checkpoint, last_checkpoint, history, *callbacks]
    if ema:
        all_callbacks.append(EMAWeightAveraging(decay=params.ema_decay))
    if params.early_stopping_patience is not None:
        all_callbacks.append(
            EarlyStopping(monitor=monitor, mode=mode, patience=params.early_stopping_patience)
        )
    logger: Logger | bool = False
    if run_id is not None:
        logger = RunLogger(run_id=run_id, tracking_uri=tracking_uri, log_model=False)
        # The learning rate of each epoch beside its scores: a schedule shows in the run.
        all_callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = make_trainer(
        params,
        callbacks=all_callbacks,
        logger=logger,
        root_dir=checkpoint_dir,
        log_every_n_steps=log_every_n_steps,
        progress_bar=progress_bar,
    )
    if trainer.world_size > 1 and _fits_launched:
        raise ConfigError(
            "a second distributed training in one command: cross-prediction "
            "(acdcseg.folds > 1) and the search train several models per command; run them on "
            "one device (devices: 1), the search scales out with workers instead"
        )
    last = checkpoint_dir / "last.ckpt"
    resumed_from = last if last.is_file() else None
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resumed_from)
    seconds = time.perf_counter() - start
    if trainer.world_size > 1:
        _distributed_fit_done(trainer)
    score = checkpoint.best_model_score
    best = Path(checkpoint.best_model_path)
    return FitResult(
        best_path=best,
        best_score=float(score) if score is not None else None,
        last_path=last,
        kept_path=best if params.keep == "best" else last,
        epochs=trainer.current_epoch,
        train_seconds=seconds,
        resumed_from=resumed_from,
        history=tuple(history.rows),
    )


def _checkpoints(
    folder: Path, monitor: str, mode: Literal["min", "max"], weights_only: bool = True
) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """``best.ckpt``, weights only (what evaluation and export read), and ``last.ckpt``, the full
    state of every epoch (what a resume needs). Two callbacks: since Lightning 2.6,
    ``save_last=True`` writes ``last.ckpt`` only in the epochs whose top-k checkpoint was saved,
    so a killed run would resume from its best epoch and train the epochs after it again.
    ``weights_only=False`` for weight averaging: Lightning skips the callbacks' checkpoint hooks
    in a weights-only save, so ``best.ckpt`` would hold the raw weights, not the averaged ones
    its score was measured with."""
    best = ModelCheckpoint(
        dirpath=folder,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_weights_only=weights_only,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False)
    return best, last


_fits_launched = 0


def _distributed_fit_done(trainer: L.Trainer) -> None:
    """After a distributed fit a worker (global rank > 0) leaves the stage: rank 0 alone
    evaluates, logs and writes. Rank 0 counts the fit: the workers are gone, so a second
    distributed fit in this process would wait for them forever."""
    global _fits_launched
    if not trainer.is_global_zero:
        raise WorkerFinished(f"rank {trainer.global_rank} done")
    _fits_launched += 1


def predict(
    module: L.LightningModule, images: torch.Tensor, params: TrainerParams, batch_size: int
) -> torch.Tensor:
    """``module.predict_step`` over ``images`` in batches on one device, concatenated on the CPU."""
    trainer = make_trainer(params, devices=1, progress_bar=False)
    loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=False)
    parts = trainer.predict(module, dataloaders=loader)
    return torch.cat([p.cpu() for p in parts])


def export_checkpoint(best: Path, target: Path, hparams: Mapping[str, Any] | None = None) -> None:
    """The best epoch without optimiser and loop state: what inference and registration need
    (a third of a full Lightning checkpoint), written atomically. ``hparams`` are added to its
    hyper-parameters: choices made after training (e.g. the post-processing) travel with it."""
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    keep = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch", "global_step")
    out = {k: checkpoint[k] for k in keep if k in checkpoint}
    out["hyper_parameters"] = {**out.get("hyper_parameters", {}), **dict(hparams or {})}
    with atomic_file(target) as tmp:
        torch.save(out, tmp)
