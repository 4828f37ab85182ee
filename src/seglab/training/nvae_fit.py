"""Fit an NVAE: the one training function behind every NVAE of the project (the stage's NVAE of
ground-truth masks, the Optuna search's trials, the correctors trained from predicted masks).

:func:`train_nvae_model` fits on ``train``/``val`` tensors (:func:`seglab.data.acdcseg.
nvae_tensors`) with best/last checkpoints in a folder, resuming from its ``last.ckpt``; extra
Lightning callbacks (an Optuna pruner) go in as they are. The fitting itself is
:func:`seglab.training.fit.fit`, the loop every trainer shares. A diverging loss raises
:class:`~seglab.models.nvae.KLDivergenceError` (one line naming the step and the KL terms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from seglab.config import NvaeParams, TrainerParams
from seglab.errors import ConfigError
from seglab.training.datamodule import TensorDataModule
from seglab.training.fit import apply_speedups, fit, seed
from seglab.training.nvae_module import MONITOR, NvaeModule


@dataclass(frozen=True)
class NvaeFit:
    """What :func:`train_nvae_model` left behind."""

    module: NvaeModule  # the kept epoch (lowest val_loss by default), on the CPU, in eval mode
    kept_path: Path  # the checkpoint trainer.keep names (best validation loss by default)
    last_path: Path
    best_val_loss: float | None
    epochs: int  # epochs completed, counting those before a resume
    history: tuple[dict[str, float], ...]  # EpochHistory rows
    fit_seconds: float  # wall time of this call's fit (not of earlier, resumed calls)
    resumed_from: Path | None

    def timings(self) -> dict[str, float]:
        """``train_seconds`` (wall time of all epochs, across resumes), ``seconds_per_epoch``,
        ``epochs_to_best`` (1-based epoch of the lowest val_loss) and ``seconds_to_best``."""
        if not self.history:
            return {"train_seconds": self.fit_seconds}
        best = min(range(len(self.history)), key=lambda i: self.history[i]["val_loss"])
        total = self.history[-1]["seconds"]
        return {
            "train_seconds": total,
            "seconds_per_epoch": total / len(self.history),
            "epochs_to_best": best + 1,
            "seconds_to_best": self.history[best]["seconds"],
        }


def train_nvae_model(
    nvae: NvaeParams,
    trainer: TrainerParams,
    data: Mapping[str, tuple[Tensor, Tensor]],
    checkpoint_dir: Path,
    *,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    callbacks: Sequence[Callback] = (),
    image_size: int | None = None,
    log_every_n_steps: int = 10,
    progress_bar: bool = False,
    init_state: Mapping[str, Tensor] | None = None,
) -> NvaeFit:
    """Fit an NVAE on ``data["train"]``, validating on ``data["val"]`` (``(inputs, targets)``,
    e.g. from :func:`nvae_tensors`); keep ``best.ckpt`` (lowest ``val_loss``) and ``last.ckpt``
    in ``checkpoint_dir``, resuming from ``last.ckpt`` when it is there.

    With ``run_id`` (and its store's ``tracking_uri``) Lightning logs into that MLflow run: the
    per-step training terms every ``log_every_n_steps`` steps, the validation figures per epoch.
    Early stopping on ``val_loss`` with ``trainer.early_stopping_patience``. Resume only an
    interrupted call with the same params: the cosine schedule's length is restored with it.
    ``init_state`` (an NVAE ``state_dict``) starts a fresh training from those weights where
    names and shapes match (a corrector from the NVAE of ground-truth masks); a resumed training
    ignores it. Raises :class:`~seglab.models.nvae.KLDivergenceError` when the loss stops being
    finite.
    """
    inputs = data["train"][0]
    if inputs.ndim != 4 or inputs.shape[1] != nvae.in_channels:
        raise ConfigError(
            f"nvae.in_channels is {nvae.in_channels} but the inputs are {list(inputs.shape)} "
            "(4 channels for a mask, 12 for a 3-gram)"
        )
    if run_id is not None and tracking_uri is None:
        raise ValueError("run_id needs the tracking_uri of the store that holds the run")
    seed(trainer)
    module = NvaeModule(nvae, image_size or int(inputs.shape[-1]))
    datamodule = TensorDataModule(
        {split: data[split] for split in ("train", "val")},
        batch_size=trainer.batch_size,
        seed=trainer.seed,
    )
    if init_state is not None and not (Path(checkpoint_dir) / "last.ckpt").is_file():
        load_matching(module.model, init_state)
    fitted = fit(
        module,
        datamodule,
        trainer,
        checkpoint_dir,
        monitor=MONITOR,
        mode="min",
        run_id=run_id,
        tracking_uri=tracking_uri,
        callbacks=callbacks,
        log_every_n_steps=log_every_n_steps,
        progress_bar=progress_bar,
    )
    best = NvaeModule.load_from_checkpoint(fitted.kept_path, map_location="cpu").eval()
    apply_speedups(best, trainer.channels_last, compile=False)  # evaluation runs in its format
    return NvaeFit(
        module=best,
        kept_path=fitted.kept_path,
        best_val_loss=fitted.best_score,
        last_path=fitted.last_path,
        epochs=fitted.epochs,
        history=fitted.history,
        fit_seconds=fitted.train_seconds,
        resumed_from=fitted.resumed_from,
    )


def load_matching(net: nn.Module, state: Mapping[str, Tensor]) -> tuple[int, int]:
    """Copy the tensors of ``state`` whose name and shape match ``net``'s; returns how many
    were copied and how many of ``net``'s tensors kept their own values."""
    own = net.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(matching, strict=False)
    return len(matching), len(own) - len(matching)
