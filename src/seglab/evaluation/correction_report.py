"""The correction study's report: the segmenters' masks against each corrector's, on ACDCSeg rows.

Everything is measured against the ground truth of the given rows, for ``before`` (the
segmenters' masks) and every corrected set in ``after``:

* Dice as ``seglab.metrics.overlap`` defines it (dataset ``dice_mean`` = mean of the three class
  means; a structure absent from both masks is excluded), overall and per segmenter, group and
  phase; anatomical validity and errors per criterion (``seglab.metrics.anatomy``).
* Emptied slices: a mask that is all background where the ground truth shows a heart breaks no
  criterion but is never valid (``seglab.metrics.emptied``); every method's are counted apart
  (``emptied``), so erasing hearts neither raises validity nor counts as ``made_valid``.
* Per slice, ``dsc`` = mean Dice of the structures present in the ground truth or the mask, and
  **1 when both are empty** (predicting nothing on a background slice is right; the same
  convention as ``seglab.inference.correction.mask_agreement``). So removing a false positive
  from a background slice counts as a full +1 improvement: the study's best "improvements" were
  such slices, which is why empty-ground-truth slices are also reported apart.
* ``delta = dsc(gt, after) - dsc(gt, before)``: improved above ``params.changed``, worsened below
  ``-params.changed``, unchanged otherwise; ``large_up``/``large_down`` beyond ``params.large``.
* Clinical indices per (patient, segmenter) with both ED and ES rows, against the same indices
  from the ground truth (``seglab.metrics.clinical``). A method's volume pair with an emptied
  slice is left out of its mean errors and counted apart (``clinical_emptied``): an erased
  heart has no volume to measure, and its small errors against a poor segmenter's are no win.
* Quality control: how well each score ranks the slices whose true ``dsc`` before correction is
  below ``params.bad_dice`` (low score = suspicious), as MONAI's AUROC.

The caller logs the files and writes the returned summary as the DVC metrics file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from monai.metrics import compute_roc_auc

from seglab.config import CorrectionReportParams
from seglab.data.labels import NUM_LABELS, STRUCTURES
from seglab.evaluation.nvae_report import add_legend, show_mask
from seglab.io import atomic_dir
from seglab.metrics.anatomy import CRITERIA
from seglab.metrics.clinical import INDICES, clinical_errors, clinical_indices
from seglab.metrics.emptied import ValidityResult, check_against
from seglab.metrics.overlap import OverlapResult, overlap, summarize_overlap
from seglab.variants import CORRECTORS

BEFORE = "before"
#: Columns of ``meta`` the report needs.
META_COLUMNS = (
    "patient",
    "group",
    "phase",
    "slice_index",
    "spacing_x",
    "spacing_y",
    "thickness",
    "segmenter",
)
#: The study's own figures (ACDCSeg test, 728 slices), shown next to ours in report.md.
STUDY: dict[str, dict[str, float]] = {
    BEFORE: {"dice_mean": 0.8973},
    **{name: variant.study for name, variant in CORRECTORS.items()},
}
STUDY_SLICES = 728
DICE_KEYS = ("dice_mean", *(f"dice_{name}" for name in STRUCTURES))
CHANGE_KEYS = ("improved", "worsened", "unchanged", "large_up", "large_down")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HIST_BINS = np.linspace(-1.025, 1.025, 42)  # 0.05 wide, one centred on 0
_DPI = 100


@dataclass(frozen=True)
class _Scored:
    """One mask set measured against the ground truth."""

    overlap: OverlapResult
    anatomy: ValidityResult  # valid excludes the slices emptied against the ground truth
    dsc: np.ndarray
    """float [N]: per-slice Dice, 1 where mask and ground truth are both empty."""


# ---------------------------------------------------------------------------- validation


def _check_masks(name: str, masks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != shape:
        raise ValueError(f"{name}: shape {masks.shape} differs from the ground truth's {shape}")
    if not np.issubdtype(masks.dtype, np.integer) and not np.array_equal(masks, masks.round()):
        raise ValueError(f"{name}: labels must be whole numbers 0..{NUM_LABELS - 1}")
    if masks.size and (masks.min() < 0 or masks.max() >= NUM_LABELS):
        raise ValueError(f"{name}: labels must lie in 0..{NUM_LABELS - 1}")
    return masks.astype(np.uint8, copy=False)


def _validate(
    meta: pd.DataFrame,
    image: np.ndarray,
    gt: np.ndarray,
    before: np.ndarray,
    after: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Ground truth, the mask sets (``before`` first) and the scores, checked against each other."""
    missing = [c for c in META_COLUMNS if c not in meta.columns]
    if missing:
        raise ValueError(f"meta lacks the columns {missing}")
    gt = np.asarray(gt)
    if gt.ndim != 3 or len(gt) == 0:
        raise ValueError(f"gt: expected [N, H, W] labels with N > 0, got shape {gt.shape}")
    if len(meta) != len(gt):
        raise ValueError(f"meta has {len(meta)} rows, gt has {len(gt)} slices")
    if np.shape(image) != gt.shape:
        raise ValueError(f"image: shape {np.shape(image)} differs from the ground truth's")
    gt = _check_masks("gt", gt, gt.shape)
    masks = {BEFORE: _check_masks(BEFORE, before, gt.shape)}
    for name, mask in after.items():
        if name == BEFORE or not _NAME.match(name):
            raise ValueError(f"method name {name!r}: use letters, digits, '_', '.', '-'")
        masks[name] = _check_masks(name, mask, gt.shape)
    checked = {}
    for name, score in scores.items():
        values = np.asarray(score, dtype=np.float64)
        if not _NAME.match(name):
            raise ValueError(f"score name {name!r}: use letters, digits, '_', '.', '-'")
        if values.shape != (len(gt),) or not np.isfinite(values).all():
            raise ValueError(f"score {name}: expected {len(gt)} finite values, got {values.shape}")
        checked[name] = values
    return gt, masks, checked


# ---------------------------------------------------------------------------- measures


def _score(mask: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> _Scored:
    result = overlap(mask, gt, spacing)
    dsc = np.where(np.isnan(result.dice_mean), 1.0, result.dice_mean)
    return _Scored(result, check_against(mask, gt, spacing), dsc)


def _score_changes(
    mask: np.ndarray, gt: np.ndarray, spacing: np.ndarray, base: _Scored, base_mask: np.ndarray
) -> _Scored:
    """``_score`` that measures only the slices where ``mask`` differs from ``base_mask`` and
    copies the rest from ``base``: every figure is per slice, and a gated corrector keeps
    most of the segmenter's masks as they are."""
    rows = np.flatnonzero((mask != base_mask).reshape(len(mask), -1).any(axis=1))
    if len(rows) == 0:
        return base
    part = _score(mask[rows], gt[rows], spacing[rows])
    fields = {}
    for name in ("dice", "hd95", "case", "empty_gt", "empty_pred"):
        merged = getattr(base.overlap, name).copy()
        merged[rows] = getattr(part.overlap, name)
        fields[name] = merged
    errors, dsc = base.anatomy.errors.copy(), base.dsc.copy()
    errors[rows], dsc[rows] = part.anatomy.errors, part.dsc
    emptied = base.anatomy.emptied.copy()
    emptied[rows] = part.anatomy.emptied
    anatomy = ValidityResult(errors, emptied=emptied, hearts=base.anatomy.hearts)
    return _Scored(OverlapResult(**fields), anatomy, dsc)


def _subset(result: OverlapResult, rows: np.ndarray) -> OverlapResult:
    return OverlapResult(
        result.dice[rows],
        result.hd95[rows],
        result.case[rows],
        result.empty_gt[rows],
        result.empty_pred[rows],
    )


def _dice_figures(result: OverlapResult, anatomy: ValidityResult) -> dict[str, float]:
    summary = summarize_overlap(result)
    return {
        **{key: summary[key] for key in DICE_KEYS},
        "hd95_mean": summary["hd95_mean"],
        "anatomical_validity": float(anatomy.valid.mean()),
        "emptied": int(anatomy.emptied.sum()),
    }


def _changes(
    delta: np.ndarray, before: _Scored, after: _Scored, params: CorrectionReportParams
) -> dict[str, float | int]:
    valid_before, valid_after = before.anatomy.valid, after.anatomy.valid
    improved, worsened = delta > params.changed, delta < -params.changed
    return {
        "improved": int(improved.sum()),
        "worsened": int(worsened.sum()),
        "unchanged": int((~improved & ~worsened).sum()),
        "large_up": int((delta > params.large).sum()),
        "large_down": int((delta < -params.large).sum()),
        "delta_mean": float(delta.mean()),
        "made_valid": int((~valid_before & valid_after).sum()),
        "made_invalid": int((valid_before & ~valid_after).sum()),
    }


def _grouped(meta: pd.DataFrame, scored: Mapping[str, _Scored], column: str) -> pd.DataFrame:
    """Dice and validity of every method within each value of ``column`` (long table)."""
    rows = []
    for value, index in meta.groupby(column, sort=True).indices.items():
        for name, result in scored.items():
            figures = _dice_figures(_subset(result.overlap, index), result.anatomy.take(index))
            rows.append({column: value, "method": name, "slices": len(index), **figures})
    return pd.DataFrame(rows)


def _empty_gt(
    scored: Mapping[str, _Scored], deltas: Mapping[str, np.ndarray], changed: float
) -> pd.DataFrame:
    """What each method did on the slices whose ground truth is pure background."""
    rows = []
    for name, result in scored.items():
        empty = result.overlap.empty_gt
        row: dict[str, Any] = {
            "method": name,
            "slices": int(empty.sum()),
            "pred_empty": int((empty & result.overlap.empty_pred).sum()),
            "pred_nonempty": int((empty & ~result.overlap.empty_pred).sum()),
        }
        delta = deltas.get(name)
        row["improved"] = None if delta is None else int((empty & (delta > changed)).sum())
        row["worsened"] = None if delta is None else int((empty & (delta < -changed)).sum())
        rows.append(row)
    return pd.DataFrame(rows).astype({"improved": "Int64", "worsened": "Int64"})


def _volume(masks: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """[H, W, Z] volume of the given rows in slice order (Z along the last axis)."""
    return np.moveaxis(masks[rows.sort_values("slice_index").index.to_numpy()], 0, -1)


def _clinical(
    meta: pd.DataFrame,
    gt: np.ndarray,
    masks: Mapping[str, np.ndarray],
    emptied: Mapping[str, np.ndarray],
) -> tuple[pd.DataFrame, dict[str, dict[str, float]], int, dict[str, int]]:
    """Per (patient, segmenter) with ED and ES rows: indices of every method and of the ground
    truth (long table, with ``emptied``: the method erased a heart in that pair), each method's
    mean absolute error per index over the pairs it did not empty, the volume count, and per
    method the number of pairs it emptied (``emptied[name]``: bool [N] per row)."""
    volumes: dict[str, tuple[pd.DataFrame, pd.DataFrame, tuple[float, float, float]]] = {}
    keys: dict[str, tuple[str, str]] = {}
    for (patient, segmenter), rows in meta.groupby(["patient", "segmenter"], sort=True):
        phases = {phase: part for phase, part in rows.groupby("phase")}
        if {"ED", "ES"} <= phases.keys():
            for phase in ("ED", "ES"):
                if phases[phase]["slice_index"].duplicated().any():
                    raise ValueError(f"meta: {patient}/{segmenter} {phase} repeats a slice_index")
            first = phases["ED"].iloc[0]
            spacing = (float(first.spacing_x), float(first.spacing_y), float(first.thickness))
            key = f"{patient} {segmenter}"
            volumes[key], keys[key] = (phases["ED"], phases["ES"], spacing), (patient, segmenter)
    if not volumes:
        return pd.DataFrame(), {name: {} for name in masks}, 0, dict.fromkeys(masks, 0)

    def indices(labels: np.ndarray) -> dict[str, dict[str, float]]:
        return {
            key: clinical_indices(_volume(labels, ed), _volume(labels, es), spacing)
            for key, (ed, es, spacing) in volumes.items()
        }

    truth = indices(gt)
    tables, mae, counts = [], {}, {}
    for name, labels in masks.items():
        errors = clinical_errors(indices(labels), truth)
        erased = pd.Series(
            {
                key: bool(emptied[name][np.r_[ed.index, es.index]].any())
                for key, (ed, es, _) in volumes.items()
            }
        ).reindex(errors.per_patient.index)
        kept = errors.per_patient[~erased.to_numpy()]
        mae[name] = {f"{i}_mae": float(kept[f"{i}_abs_error"].mean()) for i in INDICES}
        counts[name] = int(erased.sum())
        for index in INDICES:
            columns = {f"{index}_{k}": k for k in ("true", "pred", "error", "abs_error")}
            part = errors.per_patient[list(columns)].rename(columns=columns)
            part = part.assign(method=name, index=index, emptied=erased.to_numpy())
            tables.append(part.reset_index())
    table = pd.concat(tables, ignore_index=True)
    pairs = table["patient"].map(keys)
    table = table.assign(patient=pairs.str[0], segmenter=pairs.str[1])
    order = [
        "patient",
        "segmenter",
        "method",
        "index",
        "true",
        "pred",
        "error",
        "abs_error",
        "emptied",
    ]
    return table[order], mae, len(volumes), counts


def _roc_curve(suspicion: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, ...]:
    """False and true positive rates at each distinct threshold, from (0, 0) (nothing
    flagged: no threshold, NaN) to (1, 1)."""
    order = np.argsort(-suspicion, kind="stable")
    ranked, hits = suspicion[order], bad[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    tp, fp = np.cumsum(hits)[last], np.cumsum(~hits)[last]
    fpr = np.r_[0.0, fp / max(fp[-1], 1)]
    tpr = np.r_[0.0, tp / max(tp[-1], 1)]
    return fpr, tpr, np.r_[np.nan, ranked[last]]


def _qc(
    scores: Mapping[str, np.ndarray], bad: np.ndarray
) -> tuple[dict[str, dict[str, Any]], pd.DataFrame]:
    """AUROC of each score for finding the bad slices (low score first), and the ROC points."""
    figures, curves = {}, []
    for name, score in scores.items():
        entry: dict[str, Any] = {"auroc": None, "bad_slices": int(bad.sum())}
        if bad.all() or not bad.any():
            entry["note"] = "only one class: " + ("every" if bad.all() else "no") + " slice is bad"
        else:
            suspicion = -score
            auroc = compute_roc_auc(torch.from_numpy(suspicion), torch.from_numpy(bad.astype(int)))
            entry["auroc"] = float(auroc)
            fpr, tpr, threshold = _roc_curve(suspicion, bad)
            curves.append(
                pd.DataFrame({"score": name, "fpr": fpr, "tpr": tpr, "threshold": -threshold})
            )
        figures[name] = entry
    return figures, _frames(curves, ["score", "fpr", "tpr", "threshold"])


# ---------------------------------------------------------------------------- figures


def _violin_figure(scored: Mapping[str, _Scored]) -> Figure:
    fig = Figure(figsize=(1.6 * len(scored) + 2.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.violinplot([s.dsc for s in scored.values()], showmedians=True)
    ax.set_xticks(range(1, len(scored) + 1), list(scored), rotation=20)
    ax.set_ylabel("per-slice Dice (1 = both empty)")
    ax.set_title("Per-slice Dice against ground truth")
    return fig


def _delta_figure(deltas: Mapping[str, np.ndarray]) -> Figure:
    fig = Figure(figsize=(6.5, 2.2 * max(len(deltas), 1) + 0.6), layout="constrained")
    axes = fig.subplots(max(len(deltas), 1), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (name, delta) in zip(axes, deltas.items(), strict=False):
        ax.hist(delta, bins=_HIST_BINS, color="tab:blue", log=True)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_title(f"{name}: mean {delta.mean():+.4f}", fontsize=9)
        ax.set_ylabel("slices")
    axes[-1].set_xlabel("dsc(gt, corrected) - dsc(gt, input)")
    return fig


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """Least-squares slope, intercept and R^2 of y on x; None when x or y is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept), float(np.corrcoef(x, y)[0, 1] ** 2)


def _scatter_figure(before: np.ndarray, after: Mapping[str, np.ndarray]) -> Figure:
    count = max(len(after), 1)
    fig = Figure(figsize=(4.2 * count, 4.4), layout="constrained")
    axes = fig.subplots(1, count, squeeze=False)[0]
    for ax, (name, values) in zip(axes, after.items(), strict=False):
        ax.scatter(before, values, s=6, alpha=0.4, color="tab:blue")
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="y = x")
        fit = _fit(before, values)
        if fit is not None:
            slope, intercept, r2 = fit
            label = f"fit y = {slope:.3f} x + {intercept:.3f}, R$^2$ = {r2:.3f}"
            ax.plot([0, 1], [intercept, slope + intercept], color="tab:red", label=label)
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="Dice before", ylabel="Dice after")
        ax.set_title(name)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def _counts_figure(changes: Mapping[str, Mapping[str, Any]], changed: float) -> Figure:
    fig = Figure(figsize=(1.8 * max(len(changes), 1) + 3, 4), layout="constrained")
    ax = fig.subplots()
    names = list(changes)
    width = 0.27
    colours = ("tab:green", "tab:red", "tab:grey")
    for k, (outcome, colour) in enumerate(zip(CHANGE_KEYS[:3], colours, strict=True)):
        positions = np.arange(len(names)) + (k - 1) * width
        bars = ax.bar(positions, [changes[n][outcome] for n in names], width, color=colour)
        bars.set_label(outcome)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("slices")
    ax.set_title(f"Slices whose Dice changed by more than {changed:g}")
    ax.legend(fontsize=8)
    return fig


def _gallery_figure(
    rows: np.ndarray,
    title: str,
    image: np.ndarray,
    masks: tuple[np.ndarray, np.ndarray, np.ndarray],
    captions: list[str],
    dice: tuple[np.ndarray, np.ndarray],
) -> Figure:
    """One row per slice: image, input, corrected, ground truth."""
    before, after, gt = masks
    fig = Figure(figsize=(9.6, 2.5 * max(len(rows), 1) + 0.8), layout="constrained")
    fig.suptitle(title, fontsize=10)
    if len(rows) == 0:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no such slice", ha="center", va="center")
        ax.axis("off")
        return fig
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for row, i in zip(axes, rows, strict=True):
        row[0].imshow(image[i], cmap="gray", interpolation="nearest")
        row[0].set_title(captions[i], fontsize=8)
        row[0].axis("off")
        show_mask(row[1], before[i], f"input, Dice {dice[0][i]:.3f}")
        show_mask(row[2], after[i], f"corrected, Dice {dice[1][i]:.3f}")
        show_mask(row[3], gt[i], "ground truth")
    add_legend(fig)
    return fig


def _roc_figure(
    curves: pd.DataFrame, qc: Mapping[str, Mapping[str, Any]], bad_dice: float
) -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--", label="chance")
    for name, entry in qc.items():
        if entry["auroc"] is None:
            ax.plot([], [], " ", label=f"{name}: no AUROC ({entry['note']})")
            continue
        part = curves[curves["score"] == name]
        ax.plot(part["fpr"], part["tpr"], label=f"{name}: AUROC {entry['auroc']:.3f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"Finding slices with Dice < {bad_dice:g} (low score first)", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _figures(
    meta: pd.DataFrame,
    image: np.ndarray,
    gt: np.ndarray,
    masks: Mapping[str, np.ndarray],
    scored: Mapping[str, _Scored],
    deltas: Mapping[str, np.ndarray],
    changes: Mapping[str, Mapping[str, Any]],
    qc: tuple[Mapping[str, Mapping[str, Any]], pd.DataFrame],
    params: CorrectionReportParams,
) -> dict[str, Figure]:
    figures = {
        "dice_violin.png": _violin_figure(scored),
        "delta_hist.png": _delta_figure(deltas),
        "dice_scatter.png": _scatter_figure(scored[BEFORE].dsc, {n: scored[n].dsc for n in deltas}),
        "change_counts.png": _counts_figure(changes, params.changed),
    }
    if qc[0]:
        figures["roc.png"] = _roc_figure(qc[1], qc[0], params.bad_dice)
    captions = [f"{r.patient} {r.phase} s{r.slice_index} {r.segmenter}" for r in meta.itertuples()]
    for name, delta in deltas.items():
        order = np.argsort(-delta, kind="stable")
        picks = {
            "improved": order[delta[order] > params.changed][: params.gallery],
            "worsened": order[::-1][delta[order[::-1]] < -params.changed][: params.gallery],
        }
        for outcome, rows in picks.items():
            figures[f"gallery_{name}_{outcome}.png"] = _gallery_figure(
                rows,
                f"{name}: most {outcome} slices",
                image,
                (masks[BEFORE], masks[name], gt),
                captions,
                (scored[BEFORE].dsc, scored[name].dsc),
            )
    return figures


# ---------------------------------------------------------------------------- tables and text


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{value:.4f}"
    return str(value)


def _markdown(frame: pd.DataFrame) -> str:
    """GitHub-flavoured table of ``frame`` (index included when it is named)."""
    if frame.index.name is not None:
        frame = frame.reset_index()
    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "|".join("---" for _ in frame.columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def _slice_table(
    meta: pd.DataFrame,
    scored: Mapping[str, _Scored],
    deltas: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    bad: np.ndarray,
) -> pd.DataFrame:
    keep = [
        c for c in ("patient", "group", "phase", "frame", "slice_index", "segmenter") if c in meta
    ]
    table = meta[keep].reset_index(drop=True).copy()
    table["empty_gt"] = scored[BEFORE].overlap.empty_gt
    for name, result in scored.items():
        table[f"dice_{name}"] = result.dsc
        if name in deltas:
            table[f"delta_{name}"] = deltas[name]
        table[f"valid_{name}"] = result.anatomy.valid
        table[f"emptied_{name}"] = result.anatomy.emptied
    for name, score in scores.items():
        table[f"score_{name}"] = score
    table["bad_before"] = bad
    return table


def _comparison(summary: Mapping[str, Any], methods: list[str]) -> pd.DataFrame:
    """Our headline figures next to the study's (where the study had the method)."""
    rows = []
    for name in methods:
        ours, study = summary[name], STUDY.get(name, {})
        rows.append(
            {
                "method": name,
                "dice_mean": ours["dice_mean"],
                "study_dice_mean": study.get("dice_mean"),
                "improved": ours.get("improved"),
                "study_improved": study.get("improved"),
                "worsened": ours.get("worsened"),
                "study_worsened": study.get("worsened"),
            }
        )
    counts = ("improved", "study_improved", "worsened", "study_worsened")
    return pd.DataFrame(rows).astype(dict.fromkeys(counts, "Int64"))


def _pivot(grouped: pd.DataFrame, column: str, methods: list[str]) -> pd.DataFrame:
    table = grouped.pivot(index=column, columns="method", values="dice_mean")[methods]
    table.insert(0, "slices", grouped.groupby(column)["slices"].first())
    table.columns.name = None
    return table


def _report_text(
    summary: Mapping[str, Any],
    qc: Mapping[str, Mapping[str, Any]],
    tables: Mapping[str, pd.DataFrame],
    clinical_mae: pd.DataFrame,
    params: CorrectionReportParams,
    figure_names: list[str],
    provenance: str = "",
) -> str:
    methods = list(tables["summary"]["method"])
    qc_lines = [
        f"- `{name}`: AUROC "
        + (f"{e['auroc']:.4f}" if e["auroc"] is not None else f"not defined ({e['note']})")
        + f"; {e['bad_slices']} of {summary['slices']} slices are bad"
        for name, e in qc.items()
    ] or ["- no QC score was given"]
    sections = [
        "# Correction study: segmenters' masks before and after correction",
        *([f"**{provenance}**"] if provenance else []),
        f"{summary['slices']} slices ({summary['empty_gt_slices']} with an empty ground truth), "
        f"methods: {', '.join(methods)}. Per-slice Dice is the mean over the structures present "
        "in the ground truth or the mask, 1 when both are empty; dataset Dice is the mean of the "
        "three class means (structures absent from both excluded). A slice counts as improved "
        f"(worsened) when its Dice rises (falls) by more than {params.changed:g}; "
        f"`large_up`/`large_down` count changes beyond {params.large:g}. A mask that is all "
        "background where the ground truth shows a heart breaks no anatomical criterion but is "
        "never valid: such slices are counted apart (`emptied`) and never `made_valid`.",
        f"## Against the study\nThe study's figures come from its ACDCSeg test set "
        f"({STUDY_SLICES} slices); ours from the rows given here.\n\n"
        + _markdown(tables["comparison"]),
        "## Dice and anatomical validity\n" + _markdown(tables["summary"]),
        "## Changes per slice\n" + _markdown(tables["changes"]),
        "## Dice per segmenter\n" + _markdown(tables["by_segmenter"]),
        "## Dice per group\n" + _markdown(tables["by_group"]),
        "## Dice per phase\n" + _markdown(tables["by_phase"]),
        "## Anatomical errors per criterion (slices)\n" + _markdown(tables["criteria"]),
        "## Slices with an empty ground truth\nA correct mask of such a slice is empty; "
        "removing a false positive lifts its Dice from 0 to 1.\n\n" + _markdown(tables["empty_gt"]),
        f"## Clinical indices\n{summary['clinical_volumes']} (patient, segmenter) pairs with ED "
        "and ES rows; mean absolute error against the ground truth's indices "
        "(volumes ml, EF %, mass g). A pair in which a method emptied a slice is left out of "
        "that method's errors and counted apart (`emptied_volumes`): an erased heart has no "
        "volume to compare.\n\n"
        + (_markdown(clinical_mae) if len(clinical_mae) else "No pair has both phases."),
        f"## Quality control without ground truth\nBad slice: Dice before correction below "
        f"{params.bad_dice:g}; a low score should flag it (AUROC 1 = perfect ranking, "
        "0.5 = chance).\n\n" + "\n".join(qc_lines),
        "## Figures\n" + "\n".join(f"- ![{n}]({n})" for n in figure_names),
    ]
    return "\n\n".join(sections) + "\n"


# ---------------------------------------------------------------------------- entry point


def _summary(
    scored: Mapping[str, _Scored],
    changes: Mapping[str, Mapping[str, Any]],
    empty: pd.DataFrame,
    mae: Mapping[str, Mapping[str, float]],
    qc: Mapping[str, Mapping[str, Any]],
    volumes: int,
    clinical_emptied: Mapping[str, int],
) -> dict[str, Any]:
    """The metrics file: one flat dict per method, QC per score, and the counts."""
    summary: dict[str, Any] = {
        "slices": len(scored[BEFORE].dsc),
        "empty_gt_slices": int(scored[BEFORE].overlap.empty_gt.sum()),
        "clinical_volumes": volumes,
    }
    for name, result in scored.items():
        summary[name] = {
            **_dice_figures(result.overlap, result.anatomy),
            **changes.get(name, {}),
            "empty_gt_pred_nonempty": int(empty.loc[name, "pred_nonempty"]),
            **{f"{key}_mae": mae[name].get(f"{key}_mae") for key in INDICES},
            "clinical_emptied": clinical_emptied[name],
        }
    summary["qc"] = {
        name: {k: v for k, v in entry.items() if k != "note"} for name, entry in qc.items()
    }
    return summary


def _tables(
    meta: pd.DataFrame,
    scored: Mapping[str, _Scored],
    changes: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
    empty: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """The report's tables, each also written as ``<name>.csv``."""
    methods = list(scored)
    headline = (*DICE_KEYS, "hd95_mean", "anatomical_validity", "emptied")
    change_columns = ["method", *CHANGE_KEYS, "delta_mean", "made_valid", "made_invalid"]
    return {
        "comparison": _comparison(summary, methods),
        "summary": pd.DataFrame(
            [{"method": n, **{k: summary[n][k] for k in headline}} for n in methods]
        ),
        "changes": pd.DataFrame(
            [{"method": n, **c} for n, c in changes.items()], columns=change_columns
        ),
        **{
            f"by_{column}": _pivot(_grouped(meta, scored, column), column, methods)
            for column in ("segmenter", "group", "phase")
        },
        "criteria": pd.DataFrame(
            {n: scored[n].anatomy.errors.sum(axis=0) for n in methods},
            index=pd.Index(CRITERIA, name="criterion"),
        ),
        "empty_gt": empty,
    }


def _clinical_mae(
    mae: Mapping[str, Mapping[str, float]], volumes: int, emptied: Mapping[str, int]
) -> pd.DataFrame:
    """Mean absolute error per index and method, and the pairs each method emptied (left out)."""
    if not volumes:
        return pd.DataFrame()
    table = pd.DataFrame(
        {n: [m.get(f"{k}_mae") for k in INDICES] for n, m in mae.items()},
        index=pd.Index(INDICES, name="index"),
        dtype=object,
    )
    table.loc["emptied_volumes"] = [emptied[n] for n in table.columns]
    return table


def correction_report(
    meta: pd.DataFrame,
    image: np.ndarray,
    gt: np.ndarray,
    before: np.ndarray,
    after: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    params: CorrectionReportParams,
    out_dir: Path,
    plots_dir: Path,
    provenance: str = "",
) -> dict[str, Any]:
    """Measure ``before`` and every ``after`` method against ``gt`` on the rows of ``meta``;
    write report.md, CSV tables and PNG figures to ``out_dir`` and the DVC plot data to
    ``plots_dir`` (both atomically); return the summary (the metrics file's content).
    ``provenance`` (what profile and data made the figures) opens the report, so that figures
    set beside the study's always say where they come from.

    ``image`` float [N, H, W], masks uint8 [N, H, W] (0 bg, 1 RV, 2 MYO, 3 LV), ``scores``
    float [N] each, higher = more plausible. Raises ValueError naming the offending input.
    """
    gt, masks, scores = _validate(meta, image, gt, before, after, scores)
    meta = meta.reset_index(drop=True)
    spacing = meta[["spacing_x", "spacing_y"]].to_numpy(dtype=np.float64)
    scored = {BEFORE: _score(masks[BEFORE], gt, spacing)}
    for name, mask in masks.items():
        if name != BEFORE:
            scored[name] = _score_changes(mask, gt, spacing, scored[BEFORE], masks[BEFORE])
    deltas = {n: scored[n].dsc - scored[BEFORE].dsc for n in scored if n != BEFORE}
    changes = {n: _changes(deltas[n], scored[BEFORE], scored[n], params) for n in deltas}
    bad = scored[BEFORE].dsc < params.bad_dice
    qc = _qc(scores, bad)
    clinical, mae, volumes, clinical_emptied = _clinical(
        meta, gt, masks, {n: result.anatomy.emptied for n, result in scored.items()}
    )
    empty = _empty_gt(scored, deltas, params.changed).set_index("method")
    summary = _summary(scored, changes, empty, mae, qc[0], volumes, clinical_emptied)
    tables = _tables(meta, scored, changes, summary, empty)
    clinical_mae = _clinical_mae(mae, volumes, clinical_emptied)
    figures = _figures(meta, image, gt, masks, scored, deltas, changes, qc, params)
    with atomic_dir(out_dir) as out, atomic_dir(plots_dir) as plots:
        _slice_table(meta, scored, deltas, scores, bad).to_csv(out / "slices.csv", index=False)
        for name, table in tables.items():
            table.to_csv(out / f"{name}.csv", index=table.index.name is not None)
        clinical.to_csv(out / "clinical.csv", index=False)
        clinical_mae.to_csv(out / "clinical_mae.csv")
        for name, figure in figures.items():
            figure.savefig(out / name, dpi=_DPI)
        text = _report_text(summary, qc[0], tables, clinical_mae, params, list(figures), provenance)
        (out / "report.md").write_text(text)
        _plot_data(scored, deltas, changes, qc[1], plots)
    return summary


def _frames(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _plot_data(
    scored: Mapping[str, _Scored],
    deltas: Mapping[str, np.ndarray],
    changes: Mapping[str, Mapping[str, Any]],
    roc: pd.DataFrame,
    folder: Path,
) -> None:
    """CSV data of the DVC plots: scatter, binned delta histogram, change counts, ROC."""
    before = scored[BEFORE].dsc
    scatter = [
        pd.DataFrame({"before": before, "after": scored[n].dsc, "method": n}) for n in deltas
    ]
    _frames(scatter, ["before", "after", "method"]).to_csv(folder / "dice_scatter.csv", index=False)
    centres = ((_HIST_BINS[:-1] + _HIST_BINS[1:]) / 2).round(3)
    hist = [
        pd.DataFrame({"delta": centres, "slices": np.histogram(d, _HIST_BINS)[0], "method": n})
        for n, d in deltas.items()
    ]
    _frames(hist, ["delta", "slices", "method"]).to_csv(folder / "delta_hist.csv", index=False)
    counts = [
        {"method": n, "outcome": k, "slices": c[k]}
        for n, c in changes.items()
        for k in CHANGE_KEYS[:3]
    ]
    pd.DataFrame(counts, columns=["method", "outcome", "slices"]).to_csv(
        folder / "change_counts.csv", index=False
    )
    roc.to_csv(folder / "roc.csv", index=False)
