"""The correctors: NVAEs that map a segmenter's mask to the ground truth (DVC
``train_corrector@<variant>``, ``seglab train corrector --variant nvae|context``).

``nvae`` reads ACDCSeg's predicted masks (4 channels), ``context`` their 3-gram (previous,
current and next slice, 12 channels); both learn to output the current slice's ground truth,
with the NVAE objective and optimiser of ``seglab.training.nvae_module``, trained on ACDCSeg's
train split and selected on its val split (lowest validation loss). With
``init_from_nvae`` the weights start from the NVAE of ground-truth masks (``train_nvae``)
wherever names and shapes match.

The gate (``seglab.inference.correction.gate``: the correction is taken only where it is
anatomically valid and the input was not, or where the input is implausible to the NVAE of
ground-truth masks, and never where it erases the input's heart) is chosen on ACDCSeg's
validation rows (``correctors.gate: auto``, :mod:`seglab.evaluation.gate_choice`) or fixed by
params; it travels with the corrector (checkpoint hyper-parameter and registry tag ``gate``).

On the test rows the stage then writes what the correction report needs, in
``<predictions>/<variant>.npz``: the corrected masks, the gated masks, the gate's name, the
per-slice validity of input and output (an output that is all background where its input is not
is invalid, and flagged in ``emptied``), the input's plausibility and its agreement with the
correction, and the row keys (patient, phase, slice, segmenter) to align with ACDCSeg.

MLflow: experiment ``acdc-correctors``, one run per variant with the per-step NVAE curves and the
test figures of the corrected and gated masks (the same keys as every ACDC model: ``dice_mean``,
``dice_lv``, ..., ``anatomical_validity``, ``emptied``, ``emptied_fraction``, judged against the
ground truth; the input's as ``input_*``, the gated ones as ``gated_*``; the chosen gate's
validation figures as ``val_gated_*`` beside ``val_input_*``, every gate's in
``gate_choice.json``); registered as ``acdc-nvae-corrector`` / ``acdc-nvae-context``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.config import CardiacParams, GateParams, NvaeStageParams
from seglab.data.acdcseg import nvae_tensors
from seglab.data.store import SliceSet, load_splits
from seglab.errors import ConfigError
from seglab.evaluation.gate_choice import (
    CorrectedRows,
    choose_gate,
    corrected_rows,
    score_gates,
)
from seglab.evaluation.nvae_report import reconstruction_figure
from seglab.inference.correction import GATE_KEY, gate, mask_agreement
from seglab.inference.nvae import CHECKPOINT, NvaeReconstructor, load_nvae
from seglab.io import atomic_file, write_record
from seglab.metrics.emptied import EMPTIED_KEYS, check_against
from seglab.metrics.overlap import OVERLAP_KEYS, overlap, summarize_overlap
from seglab.models.nvae import KLDivergenceError
from seglab.models.segmenters import parameter_count, weights_mb
from seglab.stages.artifacts import CORRECTORS_EXPERIMENT as EXPERIMENT
from seglab.stages.artifacts import ROW_KEYS
from seglab.stages.common import nvae_work_dir, run_name
from seglab.tracking import (
    configure,
    dvc_hash,
    log_dict,
    log_figure,
    log_metrics,
    set_tags,
    tracked_run,
)
from seglab.tracking.models import log_and_register
from seglab.tracking.registry import CHALLENGER, evaluation_tags, set_alias
from seglab.training.fit import apply_speedups, eval_device, export_checkpoint
from seglab.training.nvae_fit import train_nvae_model
from seglab.variants import CORRECTORS

#: The validation figures of the input and the chosen gate, logged beside the test figures.
VAL_KEYS = ("dice_mean", "anatomical_validity")


def _figures(prefix: str, labels: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> dict:
    """Overlap, validity and emptied slices against the ground truth, keys with ``prefix``."""
    summary = summarize_overlap(overlap(labels, gt, spacing))
    validity = check_against(labels, gt, spacing).summary()
    figures = {k: summary[k] for k in OVERLAP_KEYS} | {
        k: validity[k] for k in ("anatomical_validity", *EMPTIED_KEYS)
    }
    return {f"{prefix}{k}": v for k, v in figures.items()}


def _save_predictions(target: Path, test: SliceSet, arrays: dict[str, np.ndarray]) -> None:
    keys = {f"row.{k}": test.meta[k].to_numpy().astype(str) for k in ROW_KEYS}
    with atomic_file(target) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays, **keys)


def _choose_gate(
    val: CorrectedRows, rows: SliceSet, setting: str | GateParams, tolerance: float
) -> tuple[GateParams, dict[str, dict[str, float]], dict[str, Any]]:
    """The gate (``auto``: chosen on the validation rows; else the fixed one), every gate's
    validation figures by name, and the record of the choice (the figures as a list of rows:
    kept out of the DVC metrics, where the chosen gate's ``val_gated_*`` stand for them)."""
    scores = score_gates(val, rows.label, rows.spacing)
    auto = not isinstance(setting, GateParams)
    chosen = choose_gate(scores, tolerance) if auto else setting
    rule = (
        f"the most valid gate within {tolerance:g} of the input's validation Dice"
        if auto
        else "fixed by correctors.gate"
    )
    rows_scored = [{"gate": n, **f} for n, f in scores.items()]
    return chosen, scores, {"chosen": chosen.name, "rule": rule, "val": rows_scored}


def train_corrector(
    params: CardiacParams,
    variant: str,
    *,
    root: Path = Path("."),
    params_file: Path | None = None,
) -> dict[str, Any]:
    """Train, apply, gate, log and register one corrector; returns its test figures as written
    to ``<metrics>/<variant>.json``."""
    if variant not in CORRECTORS:
        raise ConfigError(f"unknown corrector variant '{variant}' ({', '.join(CORRECTORS)})")
    cfg = params.correctors
    variant_cfg = cfg.variant(variant)
    kind = CORRECTORS[variant]
    root = Path(root)
    dataset = kind.folder(params)
    splits = load_splits(root / dataset)
    source = kind.source
    # One-hot uint8: 4x smaller than floats (ACDCSeg's train split holds every segmenter's rows);
    # the model scales its inputs itself.
    tensors = {s: nvae_tensors(rows, source, torch.uint8) for s, rows in splits.items()}
    gt_nvae = load_nvae(root / params.nvae.models / CHECKPOINT)
    init = gt_nvae.model.state_dict() if variant_cfg.init_from_nvae else None
    uri = configure(params.tracking, root)
    data_md5 = str(dvc_hash(Path(dataset), root))
    stage = NvaeStageParams(model=variant_cfg.model, trainer=variant_cfg.trainer, work=cfg.work)
    work = nvae_work_dir(stage, root, data_md5, source)
    model = variant_cfg.model
    with tracked_run(
        params.tracking,
        EXPERIMENT,
        f"{variant}-{run_name(model)}",
        root=root,
        params={
            "profile": params.profile,
            "corrector": variant_cfg,
            "gate": cfg.gate,
            "gate_tolerance": cfg.gate_tolerance,
        },
        datasets={kind.dataset: Path(dataset)},
        params_file=params_file,
        tags={"variant": variant, "source": source, "role": "corrector"},
        resume=work,
    ) as run:
        try:
            fitted = train_nvae_model(
                model,
                variant_cfg.trainer,
                tensors,
                work,
                run_id=run.info.run_id,
                tracking_uri=uri,
                log_every_n_steps=cfg.log_every_n_steps,
                init_state=init,
            )
        except KLDivergenceError as exc:
            log_dict({"error": str(exc), "step": exc.step, "terms": exc.terms}, "divergence.json")
            raise
        test = splits["test"]
        device, batch = eval_device(variant_cfg.trainer), variant_cfg.trainer.eval_batch_size
        apply_speedups(gt_nvae, variant_cfg.trainer.channels_last, compile=False)
        val_rows, test_rows = (
            corrected_rows(fitted.module, gt_nvae, splits[s], source, batch, device)
            for s in ("val", "test")
        )
        chosen, val, choice = _choose_gate(val_rows, splits["val"], cfg.gate, cfg.gate_tolerance)
        log_dict(choice, "gate_choice.json")
        set_tags({GATE_KEY: chosen.name})
        before, after = test_rows.before, test_rows.after
        gated = gate(
            before,
            after,
            test_rows.valid_before,
            test_rows.valid_after,
            test_rows.plausibility,
            chosen,
        )
        gt, spacing = test.label, test.spacing
        figures = {
            **_figures("", after, gt, spacing),
            **_figures("gated_", gated.labels, gt, spacing),
            **_figures("input_", before, gt, spacing),
            "gated_taken": float(gated.taken.mean()),
            "changed_slices": float((after != before).any(axis=(1, 2)).mean()),
            **{f"val_gated_{k}": val[chosen.name][k] for k in VAL_KEYS},
            **{f"val_input_{k}": val["input"][k] for k in VAL_KEYS},
        }
        net = fitted.module.model
        sizes = {"params_count": parameter_count(net), "model_mb": weights_mb(net)}
        timings = fitted.timings()
        log_metrics({**figures, **timings, **sizes})
        captions = [
            f"{p} {ph} z{z} {s}"
            for p, ph, z, s in zip(*(test.meta[k] for k in ROW_KEYS), strict=True)
        ]
        log_figure(
            reconstruction_figure(before, after, captions=captions, rows=cfg.figure_rows),
            "plots/corrections.png",
        )
        version = log_and_register(
            NvaeReconstructor(net),
            kind.registered,
            tensors["test"][0][:2].float().numpy(),
            tags={
                **evaluation_tags("test", data_md5),
                "variant": variant,
                "stem_channels": str(model.stem_channels),
                "beta": ",".join(f"{b:g}" for b in model.beta),
                "init_from_nvae": str(init is not None),
                GATE_KEY: json.dumps(chosen.model_dump(mode="json")),
            },
        )
        # A search of this variant may have left its best trial as challenger: the corrector
        # trained here supersedes it for the next promotion.
        set_alias(
            params.tracking,
            root,
            kind.registered,
            CHALLENGER,
            str(version.version),
            reason=f"trained by train_corrector@{variant}",
        )
        _save_predictions(
            root / cfg.predictions / f"{variant}.npz",
            test,
            {
                "after": after,
                "gated": gated.labels,
                "taken": gated.taken,
                "gate": np.array(chosen.name),
                "valid_before": test_rows.valid_before,
                "valid_after": test_rows.valid_after,
                "emptied": gated.emptied,
                "plausibility": test_rows.plausibility,
                "agreement": mask_agreement(before, after),
            },
        )
        export_checkpoint(
            fitted.kept_path,
            cfg.checkpoint_path(variant, root),
            {GATE_KEY: chosen.model_dump(mode="json")},
        )
        result = {
            **figures,
            **timings,
            **sizes,
            "gate": choice,
            "epochs": fitted.epochs,
            "best_val_loss": fitted.best_val_loss,
            "run_id": run.info.run_id,
            "registered_model": kind.registered,
            "model_version": str(version.version),
        }
        write_record(cfg.metrics_path(variant, root), result)
    shutil.rmtree(work, ignore_errors=True)
    return result
