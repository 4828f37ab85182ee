"""The brain study's stages: train one architecture on the prepared LGG slices, and compare them
(DVC ``train@<name>`` and ``compare`` in ``pipelines/lgg``; ``seglab lgg train|compare``).

``train``: a segmentation-models-pytorch network (:mod:`seglab.models.lgg`) in the shared
:class:`~seglab.training.segmentation_module.SegmentationModule` (sigmoid output, Dice + BCE,
Adam) through the shared runner :func:`~seglab.training.fit.fit`: the epoch with the best
validation IoU is kept (or the last, ``trainer.keep``), training stops after
``early_stopping_patience`` epochs without a better one, and mixed precision is used on a GPU
(``precision: auto``). The kept epoch is tested on the
test split (:mod:`seglab.evaluation.lgg_report`: IoU and Dice per slice and per patient volume,
pixel accuracy, empty-mask slices apart, inference speed), recorded in one MLflow run named
``<name>`` of experiment ``lgg-architectures`` and registered as ``lgg-<name>`` with the
evaluation tags ``seglab promote`` compares on. Outputs: ``<models>/<name>.ckpt``,
``<metrics>/<name>.json`` and ``<metrics>/<name>.curves.csv`` (one row per epoch: validation IoU
and losses against wall time, a DVC plot).

``compare``: every architecture's metrics file -> ``<report>/comparison.md`` and ``.csv`` and
the figures (IoU vs training time, IoU vs parameters, model sizes), also logged as artifacts of
a ``comparison`` run in the same experiment.

An interrupted training resumes from its ``last.ckpt`` in ``architectures.work``, in a folder
named after a fingerprint of the architecture, the training params, the encoder weights and the
dataset's DVC hash; the folder is removed when the stage succeeds.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import torch

from seglab.config import BrainParams, LggArchsParams, split_arch_name
from seglab.data.splits import SPLITS
from seglab.data.store import SliceSet, load_splits
from seglab.errors import ConfigError
from seglab.evaluation.lgg_comparison import KEYS
from seglab.evaluation.lgg_report import predict_timed, prediction_figure, summarize
from seglab.io import write_record
from seglab.models.segmenters import parameter_count, weights_mb
from seglab.stages.artifacts import LGG_DATASET, LGG_EXPERIMENT
from seglab.stages.common import work_folder
from seglab.tracking import configure, dvc_hash, log_figure, log_metrics, tracked_run
from seglab.tracking.models import log_and_register
from seglab.tracking.registry import evaluation_tags
from seglab.training.datamodule import TensorDataModule
from seglab.training.fit import (
    eval_device,
    export_checkpoint,
    fit,
    inference_batch,
    resolve_precision,
)
from seglab.training.history import write_curves
from seglab.training.lgg import MONITOR, image_tensor, load_lgg_model, new_module

_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def registered_name(name: str) -> str:
    """``lgg-<decoder>-<encoder>``, the registry name of an architecture."""
    return f"lgg-{name}"


def _check_name(params: LggArchsParams, name: str) -> None:
    split_arch_name(name)
    if name not in params.names:
        raise ConfigError(f"'{name}' is not in architectures.names ({', '.join(params.names)})")


def encoder_weights_file(params: LggArchsParams, name: str, root: Path) -> Path | None:
    """The local weights file the encoder of ``name`` starts from; None for random weights.

    With ``encoder_weights: imagenet`` an encoder without an entry in ``weights_files`` is an
    error: nothing is downloaded (an offline machine cannot, and DVC could not track it).
    """
    train = params.train
    if train.encoder_weights is None:
        return None
    encoder = split_arch_name(name)[1]
    if encoder not in train.weights_files:
        listed = ", ".join(sorted(train.weights_files)) or "none"
        raise ConfigError(
            f"architectures.train.encoder_weights is '{train.encoder_weights}' but "
            f"architectures.train.weights_files names no file for encoder '{encoder}' (listed: "
            f"{listed}); weights are never downloaded: put a local state_dict file there "
            "(see README, brain study) or set encoder_weights: null for random initialisation"
        )
    path = Path(train.weights_files[encoder])
    return path if path.is_absolute() else Path(root) / path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_prepared(params: BrainParams, root: Path) -> dict[str, SliceSet]:
    """The prepared LGG splits (train, val, test); each must hold slices."""
    return load_splits(Path(root) / params.lgg.prepared, split_setting="lgg.prepare.split")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _epochs_to_best(best: Path) -> int:
    """Epochs trained when the best checkpoint was written (Lightning stores a 0-based epoch)."""
    return int(torch.load(best, map_location="cpu", weights_only=False)["epoch"]) + 1


def _captions(slices: SliceSet) -> list[str]:
    meta = slices.meta
    return [f"{p} #{n}" for p, n in zip(meta["patient"], meta["slice_number"], strict=True)]


def train_lgg(
    params: BrainParams, name: str, *, root: Path = Path("."), params_file: Path | None = None
) -> dict[str, Any]:
    """Train, test, log and register one architecture ``<decoder>-<encoder>``.

    Returns the test figures (:data:`~seglab.evaluation.lgg_comparison.KEYS` first), the costs
    (:data:`~seglab.evaluation.lgg_comparison.COST_KEYS`) and the settings, run id and registered
    version, as written to ``<metrics>/<name>.json``.
    """
    archs = params.architectures
    _check_name(archs, name)
    root = Path(root)
    weights = encoder_weights_file(archs, name, root)
    module = new_module(name, archs, weights)  # a bad weights file stops here, before any run
    weights_sha = _sha256(weights) if weights is not None else "random"
    splits = load_prepared(params, root)
    uri = configure(params.tracking, root)
    data_md5 = str(dvc_hash(Path(params.lgg.prepared), root))
    trainer = archs.train.trainer
    decoder, encoder = split_arch_name(name)
    tensors = {s: (image_tensor(splits[s]), torch.from_numpy(splits[s].label)) for s in SPLITS}
    settings = {
        "name": name,
        "train": archs.train.model_dump(mode="json"),
        "data": data_md5,
        "weights": weights_sha,
    }
    work = work_folder(root, archs.work, name, settings)
    settings = {
        "encoder_weights": archs.train.encoder_weights or "random",
        "image_size": int(splits["test"].image.shape[-1]),
        "precision": resolve_precision(trainer),
    }
    with tracked_run(
        params.tracking,
        LGG_EXPERIMENT,
        name,
        root=root,
        params={
            "name": name,
            "profile": params.profile,
            "train": archs.train,
            "prepare": params.lgg.prepare,
            "encoder_weights_sha256": weights_sha,
        },
        datasets={LGG_DATASET: Path(params.lgg.prepared)},
        params_file=params_file,
        tags={"arch": decoder, "encoder": encoder},
        resume=work,
    ) as run:
        run_id = run.info.run_id
        train_count = len(tensors["train"][0])
        data = TensorDataModule(
            {s: tensors[s] for s in ("train", "val")},
            batch_size=trainer.batch_size,
            seed=trainer.seed,
            drop_last=train_count % trainer.batch_size == 1 and train_count > 1,
        )
        fitted = fit(module, data, trainer, work, monitor=MONITOR, run_id=run_id, tracking_uri=uri)
        best = load_lgg_model(fitted.kept_path)
        test = splits["test"]
        device = eval_device(trainer)
        pred, speed = predict_timed(
            best.net,
            tensors["test"][0],
            batch_size=inference_batch(trainer),
            device=device,
            autocast=_AUTOCAST.get(settings["precision"]) if device.type == "cuda" else None,
        )
        figures = summarize(pred, test.label, test.meta["patient"].to_numpy())
        net = best.net.cpu()
        costs = {
            "train_seconds": fitted.train_seconds,
            "epochs": fitted.epochs,
            "epochs_to_best": _epochs_to_best(fitted.best_path),
            "params_count": parameter_count(net),
            "model_mb": weights_mb(net),
            "slices_per_second": speed,
        }
        log_metrics({**{k: figures[k] for k in KEYS}, **costs})
        log_figure(
            prediction_figure(test.image, test.label, pred, _captions(test)),
            "plots/test_predictions.png",
        )
        version = log_and_register(
            net,
            registered_name(name),
            tensors["test"][0][:2].numpy(),
            tags={**evaluation_tags("test", data_md5), "arch": decoder, "encoder": encoder},
        )
        export_checkpoint(fitted.kept_path, archs.checkpoint_path(name, root))
        write_curves(fitted.history, archs.curves_path(name, root))
        result = {
            **figures,
            **costs,
            "name": name,
            "decoder": decoder,
            "encoder": encoder,
            **settings,
            "best_val_iou": fitted.best_score,
            "device": _device_name(device),
            "max_epochs": trainer.max_epochs,
            "batch_size": trainer.batch_size,
            **archs.train.settings(),
            "limit_train_batches": trainer.limit_train_batches,
            "early_stopping_patience": trainer.early_stopping_patience,
            "keep": trainer.keep,
            "train_slices": train_count,
            "resumed_from": str(fitted.resumed_from) if fitted.resumed_from else None,
            "run_id": run_id,
            "registered_model": registered_name(name),
            "model_version": str(version.version),
        }
        write_record(archs.metrics_path(name, root), result)
    shutil.rmtree(work, ignore_errors=True)
    return result
