"""The segmenter stage: train one architecture on the prepared ACDC slices, and cross-predict
the training patients for ACDCSeg (DVC ``train_segmenter@<arch>``, ``seglab train segmenter``).

The final model trains on the train split, keeps the epoch with the best validation Dice (or
the last, ``trainer.keep``), is
evaluated on the test split with ``seglab.metrics`` (Dice and HD95 per structure at the prepared
pixel spacing, anatomical validity) and is recorded in one MLflow run named ``<arch>`` of
experiment ``acdc-segmenters``; the network is registered as ``acdc-segmenter-<arch>``.

Before it, when ``acdcseg.folds`` = K >= 2, the training patients are cut into K folds (stratified
by group) and K models, each trained without one fold, predict the slices of the fold they never
saw: ACDCSeg's train split is then made of predictions as honest as those on val and test
(MLflow run ``<arch>-crossfit``, a child of the ``<arch>`` run, with one child run per fold, so
that under ``mlflow run`` the launcher's run is the architecture's run). With K = 1 the stage
only records that ACDCSeg's train split uses the final model's in-sample predictions (the
study's choice).

Outputs: ``<models>/<arch>.ckpt`` (the best epoch: weights and hyper-parameters),
``<models>/<arch>.crossfit.npz`` (out-of-fold label maps), ``<metrics>/<arch>.json`` and
``<metrics>/<arch>.crossfit.json``, and ``<metrics>/<arch>.curves.csv`` (the final model's
validation figures and wall time per epoch: DVC plots and the time-to-Dice comparison). One
process does both so the pipeline pays the imports once
per architecture (tens of seconds on a small CPU).

An interrupted training resumes from its ``last.ckpt`` in ``segmenters.work``, in a folder named
after a fingerprint of the architecture, its params, the dataset's DVC hash and the fold, so a run
with other settings never resumes from it; the folders are removed when the stage succeeds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from seglab.config import CardiacParams, SegmentersParams, SegmenterTrainParams
from seglab.data.splits import patient_folds
from seglab.data.store import SliceSet
from seglab.errors import ConfigError
from seglab.evaluation.segmentation import TEST_KEYS, VOLUME_KEYS, choose_inference, evaluate
from seglab.inference.segment import (
    FLIPS_TAG,
    cleanup_of,
    flips_of,
    load_segmenter,
    module_input,
    predict_labels,
)
from seglab.io import atomic_file, write_record
from seglab.models.segmenters import ARCHS, parameter_count, weights_mb
from seglab.stages.artifacts import INSAMPLE, load_prepared
from seglab.stages.common import work_folder
from seglab.tracking import configure, dvc_hash, log_figure, log_metrics, set_tags, tracked_run
from seglab.tracking.models import log_and_register
from seglab.tracking.registry import evaluation_tags
from seglab.training.fit import (
    FitResult,
    export_checkpoint,
    fit,
)
from seglab.training.history import write_curves
from seglab.training.segmentation_module import SegmentationModule
from seglab.training.segmenters import MONITOR, new_module, segmenter_data

EXPERIMENT = "acdc-segmenters"
DATASET = "acdc_prepared"


def registered_name(arch: str) -> str:
    return f"acdc-segmenter-{arch}"


def _check_arch(params: SegmentersParams, arch: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"unknown segmenter architecture '{arch}' (known: {', '.join(ARCHS)})")
    if arch not in params.archs:
        raise ConfigError(f"'{arch}' is not in segmenters.archs ({', '.join(params.archs)})")


def _run_params(params: CardiacParams, arch: str) -> dict[str, Any]:
    return {
        "arch": arch,
        "profile": params.profile,
        "net": getattr(params.segmenters.nets, arch),
        "train": params.segmenters.train_for(arch),
        "prepare": params.acdc.prepare,
    }


def _train(
    module: SegmentationModule,
    splits: dict[str, SliceSet],
    recipe: SegmenterTrainParams,
    work: Path,
    run_id: str,
    tracking_uri: str,
    seg: SegmentersParams,
) -> tuple[SegmentationModule, FitResult]:
    """Fit on ``splits`` train/val; the best epoch's module, its clean-up chosen on val
    (``segmenters.postprocess``), and what the fit left."""
    trainer = recipe.trainer
    result = fit(
        module,
        segmenter_data(splits, recipe),
        trainer,
        work,
        monitor=MONITOR,
        run_id=run_id,
        tracking_uri=tracking_uri,
        log_every_n_steps=1,  # the module logs per epoch only; this just silences the warning
    )
    best = load_segmenter(result.kept_path)
    flips, cleanup, scores = choose_inference(best, splits["val"], trainer, seg)
    best.hparams.update(cleanup.hparams())
    log_metrics({f"val_dice_mean_postprocess_{key}": v for key, v in scores.items()})
    set_tags({**cleanup.tags(), FLIPS_TAG: str(flips)})
    return best, result


def sample_figure(slices: SliceSet, pred: np.ndarray, rows: int = 4) -> Figure:
    """Image, ground truth and prediction of a few slices spread over the split."""
    has_heart = np.flatnonzero(slices.label.reshape(len(slices), -1).any(axis=1))
    pool = has_heart if len(has_heart) else np.arange(len(slices))
    picks = pool[np.linspace(0, len(pool) - 1, min(rows, len(pool))).round().astype(int)]
    colours = ListedColormap(["none", "tab:blue", "tab:green", "tab:red"])
    fig = Figure(figsize=(7.5, 2.5 * len(picks)), layout="constrained")
    axes = fig.subplots(len(picks), 3, squeeze=False)
    for row, i in zip(axes, picks, strict=True):
        meta = slices.meta.iloc[i]
        for ax, (title, mask) in zip(
            row,
            (("image", None), ("ground truth", slices.label[i]), ("prediction", pred[i])),
            strict=True,
        ):
            ax.imshow(slices.image[i], cmap="gray")
            if mask is not None:
                ax.imshow(mask, cmap=colours, vmin=0, vmax=3, alpha=0.5, interpolation="nearest")
            ax.set_title(
                f"{meta['patient']} {meta['phase']} z{meta['slice_index']}: {title}", fontsize=8
            )
            ax.axis("off")
    return fig


def train_segmenter(
    params: CardiacParams, arch: str, *, root: Path = Path("."), params_file: Path | None = None
) -> dict[str, Any]:
    """Cross-predict the training patients, then train, test, log and register the final model.

    Returns the final model's test figures and, under ``crossfit``, the out-of-fold figures.
    """
    seg = params.segmenters
    _check_arch(seg, arch)
    root = Path(root)
    splits = load_prepared(params, root)
    uri = configure(params.tracking, root)
    data_md5 = str(dvc_hash(Path(params.acdc.prepared), root))
    work_dirs: list[Path] = []

    def work(role: str) -> Path:
        settings = {
            "arch": arch,
            "net": getattr(seg.nets, arch).model_dump(mode="json"),
            "train": seg.train_for(arch).model_dump(mode="json"),
            "data": data_md5,
            "role": role,
        }
        path = work_folder(root, seg.work, f"{arch}-{role}", settings)
        work_dirs.append(path)
        return path

    run_args: dict[str, Any] = {
        "root": root,
        "datasets": {DATASET: Path(params.acdc.prepared)},
        "params_file": params_file,
    }
    folds = params.acdcseg.folds
    final = work("final")
    with tracked_run(
        params.tracking,
        EXPERIMENT,
        arch,
        params=_run_params(params, arch),
        tags={"arch": arch, "role": "final"},
        resume=final,
        **run_args,
    ) as run:
        run_id = run.info.run_id
        crossfit = _crossfit(params, arch, splits, work, uri, run_args) if folds > 1 else None
        recipe = seg.train_for(arch)
        trainer = recipe.trainer
        best, fitted = _train(new_module(arch, seg), splits, recipe, final, run_id, uri, seg)
        seconds, epochs = fitted.train_seconds, fitted.epochs
        test = splits["test"]
        pred = predict_labels(best, test, trainer)
        figures = evaluate(pred, test)
        sizes = {
            "train_seconds": seconds,
            "params_count": parameter_count(best.net),
            "model_mb": weights_mb(best.net),
        }
        log_metrics({**{k: figures[k] for k in (*TEST_KEYS, *VOLUME_KEYS)}, **sizes})
        log_figure(sample_figure(test, pred), "plots/test_predictions.png")
        version = log_and_register(
            best.net,
            registered_name(arch),
            module_input(best, test)[:2].numpy(),
            tags={**evaluation_tags("test", data_md5), "arch": arch},
        )
        metrics = {**figures, **sizes, "epochs": epochs}
        export_checkpoint(
            final / "best.ckpt",
            seg.checkpoint_path(arch, root),
            {"flips": flips_of(best), **cleanup_of(best).hparams()},
        )
        write_curves(fitted.history, seg.curves_path(arch, root))
        write_record(
            seg.metrics_path(arch, root),
            {
                "arch": arch,
                **metrics,
                "run_id": run_id,
                "registered_model": registered_name(arch),
                "model_version": str(version.version),
            },
        )
        summary = _save_crossfit(seg, arch, root, splits["train"], crossfit, folds)
    for path in work_dirs:
        shutil.rmtree(path, ignore_errors=True)
    return {**metrics, "crossfit": summary}


def _crossfit(
    params: CardiacParams,
    arch: str,
    splits: dict[str, SliceSet],
    work: Callable[[str], Path],
    uri: str,
    run_args: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """K models, each trained without one fold of the training patients, predict that fold.

    One MLflow run ``<arch>-crossfit`` (out-of-fold figures), a child of the active run, with a
    child run per fold. Returns the out-of-fold predictions, the fold of each training slice and
    the figures.
    """
    seg, folds, seed = params.segmenters, params.acdcseg.folds, params.acdcseg.seed
    recipe = seg.train_for(arch)
    trainer = recipe.trainer
    train = splits["train"]
    assignment = patient_folds(train.meta, folds, seed)
    fold = train.meta["patient"].map(assignment).to_numpy().astype(np.int16)
    pred = np.zeros_like(train.label)
    seconds = 0.0
    with tracked_run(
        params.tracking,
        EXPERIMENT,
        f"{arch}-crossfit",
        params={**_run_params(params, arch), "folds": folds, "fold_seed": seed},
        tags={"arch": arch, "role": "crossfit"},
        nested=True,
        resume=work(f"crossfit{folds}-seed{seed}"),
        **run_args,
    ):
        for k in range(folds):
            held = fold == k
            part = {"train": train.take(~held), "val": splits["val"]}
            directory = work(f"fold{k}of{folds}-seed{seed}")
            with tracked_run(
                params.tracking,
                EXPERIMENT,
                f"{arch}-fold{k}",
                tags={"arch": arch, "role": "crossfit-fold", "fold": str(k)},
                nested=True,
                resume=directory,
                **run_args,
            ) as run:
                best, fold_fit = _train(
                    new_module(arch, seg),
                    part,
                    recipe,
                    directory,
                    run.info.run_id,
                    uri,
                    seg,
                )
                fold_seconds = fold_fit.train_seconds
                pred[held] = predict_labels(best, train.take(held), trainer)
                log_metrics({"train_seconds": fold_seconds})
            seconds += fold_seconds
        figures = evaluate(pred, train)
        log_metrics({**{k: figures[k] for k in TEST_KEYS}, "train_seconds": seconds})
    return pred, fold, {"method": f"crossfit-{folds}", **figures, "train_seconds": seconds}


def _save_crossfit(
    seg: SegmentersParams,
    arch: str,
    root: Path,
    train: SliceSet,
    crossfit: tuple[np.ndarray, np.ndarray, dict[str, Any]] | None,
    folds: int,
) -> dict[str, Any]:
    """Write ``<arch>.crossfit.npz`` and its figures; with one fold, only the in-sample mark."""
    arrays: dict[str, np.ndarray] = {"method": np.array(INSAMPLE)}
    summary: dict[str, Any] = {"method": INSAMPLE}
    if crossfit is not None:
        pred, fold, summary = crossfit
        arrays = {
            "method": np.array(f"crossfit-{folds}"),
            "pred": pred,
            "fold": fold,
            "patient": train.meta["patient"].to_numpy().astype(str),
            "frame": train.meta["frame"].to_numpy(),
            "slice_index": train.meta["slice_index"].to_numpy(),
        }
    with atomic_file(seg.crossfit_path(arch, root)) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    write_record(root / seg.metrics / f"{arch}.crossfit.json", {"arch": arch, **summary})
    return summary
