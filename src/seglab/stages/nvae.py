"""The NVAE stage: learn the shape of ground-truth masks (DVC `train_nvae`, `seglab train nvae`).

The NVAE reconstructs one-hot ACDC masks through its latent hierarchy with the study's objective
and optimiser (``seglab.training.nvae_module``), keeps the epoch with the lowest validation loss,
and is evaluated on the test split (``seglab.evaluation.nvae_report``): Dice per structure and
anatomical validity of the posterior-mean reconstructions, and the validity of masks generated
from the prior. Everything is one MLflow run of experiment ``acdc-nvae``, with the per-step
curves the study diagnosed its KL blow-up from (``train_loss``, ``train_recon``,
``train_kl_scale_<i>``, ``train_kl_coeff``, ...) as metric histories; the network is registered
as ``acdc-nvae`` (forward: one-hot masks in, reconstruction logits out).

A reusable core serves every NVAE in the project (this stage, the Optuna search of beta and stem
width, the correctors trained from predicted masks):

* :func:`nvae_tensors`: a slice set as ``(inputs, targets)`` one-hot tensors, inputs taken from
  the ground truth (4 channels), a segmenter's prediction (4) or its 3-gram context (12);
* :func:`train_nvae_model`: fit on ``train``/``val`` with best/last checkpoints in a folder,
  resuming from its ``last.ckpt``; extra Lightning callbacks (an Optuna pruner) go in as is.
  A diverging loss raises :class:`~seglab.models.nvae.KLDivergenceError` (one line naming the
  step and the KL terms), which ends the stage's MLflow run as FAILED.

Outputs: ``<models>/nvae.ckpt`` (the best epoch: weights and hyper-parameters), ``<metrics>/
nvae.json`` (test figures, timings, run and model version) and ``<metrics>/curves.csv`` (one row
per epoch: validation terms, mean training loss, wall time). An interrupted training resumes from
``<work>/<fingerprint>/last.ckpt``; the fingerprint covers the network, training params, input
source and dataset hash, so other settings never resume from it. The folder is removed on success.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn

from seglab.config import CardiacParams, NvaeParams, NvaeStageParams, TrainerParams
from seglab.data.acdcseg import onehot
from seglab.data.splits import SPLITS
from seglab.data.store import SliceSet, load_split
from seglab.errors import ConfigError, DataError, SeglabError
from seglab.evaluation.nvae_report import (
    KEYS,
    evaluate_nvae,
    generate,
    input_labels,
    reconstruct,
    reconstruction_figure,
    samples_figure,
)
from seglab.io import write_json
from seglab.models.nvae import KLDivergenceError, Nvae
from seglab.models.segmenters import parameter_count, weights_mb
from seglab.tracking import (
    configure,
    dvc_hash,
    log_artifact,
    log_dict,
    log_figure,
    log_metrics,
    tracked_run,
)
from seglab.tracking.models import log_and_register
from seglab.tracking.registry import CHALLENGER, evaluation_tags, set_alias
from seglab.training.datamodule import TensorDataModule
from seglab.training.fit import (
    RunLogger,
    apply_speedups,
    eval_device,
    export_checkpoint,
    make_trainer,
)
from seglab.training.history import EpochHistory, write_curves
from seglab.training.nvae_module import MONITOR, NvaeModule, val_loss_checkpoint

EXPERIMENT = "acdc-nvae"
REGISTERED_NAME = "acdc-nvae"
DATASET = "acdc_prepared"
CHECKPOINT = "nvae.ckpt"
METRICS = "nvae.json"
CURVES = "curves.csv"

Source = Literal["gt", "pred", "context"]
#: Where each input source lives in a slice set (``gt`` is the label map itself).
SOURCE_ARRAYS: dict[str, str] = {"pred": "pred", "context": "context"}


def nvae_tensors(
    slices: SliceSet, source: Source = "gt", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``(inputs, targets)`` one-hot: targets ``[N, 4, H, W]`` from the ground truth, inputs
    from ``source``: ``gt`` (the same masks), ``pred`` (ACDCSeg's predicted masks, 4 channels) or
    ``context`` (3-gram rows: previous, current, next prediction, 12 channels).

    ``dtype=torch.uint8`` keeps 3-gram sets 4x smaller in memory; the model scales inputs to
    ``2x - 1`` in floating point either way.
    """
    targets = onehot(slices.label, dtype)
    if source == "gt":
        return targets, targets
    if source not in SOURCE_ARRAYS:
        raise ConfigError(f"unknown NVAE input source '{source}' (gt, pred, context)")
    key = SOURCE_ARRAYS[source]
    if key not in slices.extra:
        kind = "ACDCSeg" if key == "pred" else "3-gram"
        raise SeglabError(f"NVAE input source '{source}' needs {kind} rows (no '{key}' array)")
    return onehot(slices.extra[key], dtype), targets


class NvaeReconstructor(nn.Module):
    """What the registry serves: one-hot masks ``[B, in, H, W]`` in, the logits ``[B, 4, H, W]``
    of the posterior-mean reconstruction out (argmax: the reconstructed or corrected mask)."""

    def __init__(self, nvae: Nvae) -> None:
        super().__init__()
        self.nvae = nvae

    def forward(self, x: Tensor) -> Tensor:
        return self.nvae(x, sample=False).logits


@dataclass(frozen=True)
class NvaeFit:
    """What :func:`train_nvae_model` left behind."""

    module: NvaeModule  # the lowest-val_loss epoch, on the CPU, in eval mode
    best_path: Path
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
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(trainer.seed, workers=True, verbose=False)
    module = NvaeModule(nvae, image_size or int(inputs.shape[-1]))
    datamodule = TensorDataModule(
        {split: data[split] for split in ("train", "val")},
        batch_size=trainer.batch_size,
        seed=trainer.seed,
    )
    checkpoint, history = val_loss_checkpoint(checkpoint_dir), EpochHistory(MONITOR, "min")
    all_callbacks: list[Callback] = [checkpoint, history, *callbacks]
    if trainer.early_stopping_patience is not None:
        all_callbacks.append(
            EarlyStopping(monitor=MONITOR, mode="min", patience=trainer.early_stopping_patience)
        )
    logger = False
    if run_id is not None:
        logger = RunLogger(run_id=run_id, tracking_uri=tracking_uri, log_model=False)
    pl_trainer = make_trainer(
        trainer,
        callbacks=all_callbacks,
        logger=logger,
        root_dir=checkpoint_dir,
        log_every_n_steps=log_every_n_steps,
        progress_bar=progress_bar,
    )
    last = checkpoint_dir / "last.ckpt"
    resumed_from = last if last.is_file() else None
    if init_state is not None and resumed_from is None:
        load_matching(module.model, init_state)
    start = time.perf_counter()
    pl_trainer.fit(module, datamodule=datamodule, ckpt_path=resumed_from)
    seconds = time.perf_counter() - start
    best_path = Path(checkpoint.best_model_path)
    best = NvaeModule.load_from_checkpoint(best_path, map_location="cpu").eval()
    apply_speedups(best, trainer.channels_last, compile=False)  # evaluation runs in its format
    score = checkpoint.best_model_score
    return NvaeFit(
        module=best,
        best_path=best_path,
        best_val_loss=float(score) if score is not None else None,
        last_path=last,
        epochs=pl_trainer.current_epoch,
        history=tuple(history.rows),
        fit_seconds=seconds,
        resumed_from=resumed_from,
    )


def load_matching(net: nn.Module, state: Mapping[str, Tensor]) -> tuple[int, int]:
    """Copy the tensors of ``state`` whose name and shape match ``net``'s; returns how many
    were copied and how many of ``net``'s tensors kept their own values."""
    own = net.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(matching, strict=False)
    return len(matching), len(own) - len(matching)


def load_nvae(path: Path) -> NvaeModule:
    """A trained NVAE from a checkpoint of this stage (or of :func:`train_nvae_model`), in eval
    mode on the CPU; its size and params come from the checkpoint, not the current params."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "NVAE checkpoint not found (run `dvc repro` to train it)")
    try:
        return NvaeModule.load_from_checkpoint(path, map_location="cpu").eval()
    except (OSError, RuntimeError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable NVAE checkpoint ({exc})") from exc


def work_dir(params: NvaeStageParams, root: Path, data_md5: str, source: Source = "gt") -> Path:
    """The resumable checkpoint folder of a training with exactly these settings."""
    payload = {
        "model": params.model.model_dump(mode="json"),
        "trainer": params.trainer.model_dump(mode="json"),
        "source": source,
        "data": data_md5,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / params.work / f"{source}-{digest}"


def run_name(model: NvaeParams) -> str:
    """``nvae-stem4-beta8-10-11``: the two settings the study compared runs by."""
    return f"nvae-stem{model.stem_channels}-beta{'-'.join(f'{b:g}' for b in model.beta)}"


def _captions(slices: SliceSet) -> list[str]:
    meta = slices.meta
    return [
        f"{p} {ph} z{z}"
        for p, ph, z in zip(meta["patient"], meta["phase"], meta["slice_index"], strict=True)
    ]


def overlay_tags(overlays: Sequence[Path], root: Path) -> dict[str, str]:
    """The overlays a run's params were merged from, by path and md5 (the hash DVC records for
    them in dvc.lock), comma-separated in the order applied; nothing when there are none."""
    if not overlays:
        return {}
    digests = [hashlib.md5((Path(root) / o).read_bytes()).hexdigest() for o in overlays]
    return {
        "params.overlay": ",".join(str(o) for o in overlays),
        "params.overlay.md5": ",".join(digests),
    }


def train_nvae(
    params: CardiacParams,
    *,
    root: Path = Path("."),
    params_file: Path | None = None,
    overlays: Sequence[Path] = (),
) -> dict[str, Any]:
    """Train, test, log and register the NVAE on the prepared ground-truth masks.

    ``overlays`` are the files already merged into ``params`` (a search's best settings): the
    run records them by path and md5 (tags ``params.overlay``, ``params.overlay.md5``), because
    the params file's own hash no longer says what was trained. Returns the test figures
    (:data:`~seglab.evaluation.nvae_report.KEYS` first), the timings, the run id and the
    registered version, as written to ``<metrics>/nvae.json``.
    """
    cfg = params.nvae
    root = Path(root)
    folder = root / params.acdc.prepared
    splits = {split: load_split(folder / f"{split}.npz") for split in SPLITS}
    for name, slices in splits.items():
        if len(slices) == 0:
            raise SeglabError(
                f"{params.acdc.prepared}: the {name} split has no slices (too few patients to "
                "fill every split; use more patients or change acdc.prepare.split)"
            )
    uri = configure(params.tracking, root)
    data_md5 = str(dvc_hash(Path(params.acdc.prepared), root))
    tensors = {split: nvae_tensors(slices, "gt") for split, slices in splits.items()}
    work = work_dir(cfg, root, data_md5)
    run_params = {"profile": params.profile, "nvae": cfg, "prepare": params.acdc.prepare}
    with tracked_run(
        params.tracking,
        EXPERIMENT,
        run_name(cfg.model),
        root=root,
        params=run_params,
        datasets={DATASET: Path(params.acdc.prepared)},
        params_file=params_file,
        tags={"source": "gt", "role": "reconstruction", **overlay_tags(overlays, root)},
        resume=work,
    ) as run:
        run_id = run.info.run_id
        try:
            fitted = train_nvae_model(
                cfg.model,
                cfg.trainer,
                tensors,
                work,
                run_id=run_id,
                tracking_uri=uri,
                log_every_n_steps=cfg.log_every_n_steps,
            )
        except KLDivergenceError as exc:
            log_dict({"error": str(exc), "step": exc.step, "terms": exc.terms}, "divergence.json")
            raise
        test = splits["test"]
        inputs, targets = tensors["test"]
        device = eval_device(cfg.trainer)
        figures = evaluate_nvae(
            fitted.module,
            inputs,
            targets,
            test.spacing,
            samples=cfg.samples,
            temperature=cfg.temperature,
            seed=cfg.trainer.seed,
            batch_size=cfg.trainer.eval_batch_size,
            device=device,
        )
        net = fitted.module.model
        sizes = {"params_count": parameter_count(net), "model_mb": weights_mb(net)}
        timings = fitted.timings()
        log_metrics(
            {**{k: figures[k] for k in KEYS if k in figures}, **timings, **sizes},
        )
        recon = reconstruct(
            fitted.module, inputs, batch_size=cfg.trainer.eval_batch_size, device=device
        )
        log_figure(
            reconstruction_figure(
                input_labels(inputs), recon, captions=_captions(test), rows=cfg.figure_rows
            ),
            "plots/reconstructions.png",
        )
        spacing = np.median(test.spacing, axis=0)
        samples = generate(
            fitted.module,
            min(cfg.samples, 4 * cfg.figure_rows),
            temperature=cfg.temperature,
            seed=cfg.trainer.seed,
            batch_size=cfg.trainer.eval_batch_size,
            device=device,
        )
        log_figure(samples_figure(samples, spacing, count=4 * cfg.figure_rows), "plots/samples.png")
        metrics_dir = root / cfg.metrics
        write_curves(fitted.history, metrics_dir / CURVES)
        log_artifact(metrics_dir / CURVES, "plots")
        model = cfg.model
        version = log_and_register(
            NvaeReconstructor(net),
            REGISTERED_NAME,
            inputs[:2].numpy(),
            tags={
                **evaluation_tags("test", data_md5),
                "source": "gt",
                "stem_channels": str(model.stem_channels),
                "beta": ",".join(f"{b:g}" for b in model.beta),
                "groups_per_scale": ",".join(str(g) for g in model.groups_per_scale),
            },
        )
        # The stage trains the configuration a search chose: its version, not the search's
        # shorter trial, is what the next promotion should weigh against the champion.
        set_alias(
            params.tracking,
            root,
            REGISTERED_NAME,
            CHALLENGER,
            str(version.version),
            reason=f"trained by train_nvae ({run_name(model)})",
        )
        export_checkpoint(fitted.best_path, root / cfg.models / CHECKPOINT)
        result = {
            **figures,
            **timings,
            **sizes,
            "epochs": fitted.epochs,
            "best_val_loss": fitted.best_val_loss,
            "resumed_from": str(fitted.resumed_from) if fitted.resumed_from else None,
            "run_id": run_id,
            "registered_model": REGISTERED_NAME,
            "model_version": version.version,
        }
        write_json(metrics_dir / METRICS, result)
    shutil.rmtree(work, ignore_errors=True)
    return result
