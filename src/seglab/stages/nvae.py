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
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seglab.config import CardiacParams
from seglab.data.acdcseg import nvae_tensors
from seglab.data.store import SliceSet
from seglab.evaluation.nvae_report import (
    KEYS,
    evaluate_as_configured,
    reconstruction_figure,
    samples_figure,
)
from seglab.inference.nvae import CHECKPOINT, NvaeReconstructor, generate, input_labels, reconstruct
from seglab.io import write_record
from seglab.models.nvae import KLDivergenceError
from seglab.models.segmenters import parameter_count, weights_mb
from seglab.stages.artifacts import load_prepared
from seglab.stages.common import nvae_work_dir, run_name
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
from seglab.training.fit import eval_device, export_checkpoint
from seglab.training.history import write_curves
from seglab.training.nvae_fit import train_nvae_model
from seglab.variants import GT

EXPERIMENT = "acdc-nvae"
DATASET = "acdc_prepared"
METRICS = "nvae.json"
CURVES = "curves.csv"


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
    splits = load_prepared(params, root)
    uri = configure(params.tracking, root)
    data_md5 = str(dvc_hash(Path(params.acdc.prepared), root))
    tensors = {split: nvae_tensors(slices, GT.source) for split, slices in splits.items()}
    work = nvae_work_dir(cfg, root, data_md5)
    run_params = {"profile": params.profile, "nvae": cfg, "prepare": params.acdc.prepare}
    with tracked_run(
        params.tracking,
        EXPERIMENT,
        run_name(cfg.model),
        root=root,
        params=run_params,
        datasets={DATASET: Path(params.acdc.prepared)},
        params_file=params_file,
        tags={"source": GT.source, "role": "reconstruction", **overlay_tags(overlays, root)},
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
        figures = evaluate_as_configured(
            fitted.module, inputs, targets, test.spacing, cfg, cfg.trainer
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
            GT.registered,
            inputs[:2].numpy(),
            tags={
                **evaluation_tags("test", data_md5),
                "source": GT.source,
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
            GT.registered,
            CHALLENGER,
            str(version.version),
            reason=f"trained by train_nvae ({run_name(model)})",
        )
        export_checkpoint(fitted.kept_path, root / cfg.models / CHECKPOINT)
        result = {
            **figures,
            **timings,
            **sizes,
            "epochs": fitted.epochs,
            "best_val_loss": fitted.best_val_loss,
            "resumed_from": str(fitted.resumed_from) if fitted.resumed_from else None,
            "run_id": run_id,
            "registered_model": GT.registered,
            "model_version": str(version.version),
        }
        write_record(metrics_dir / METRICS, result)
    shutil.rmtree(work, ignore_errors=True)
    return result
