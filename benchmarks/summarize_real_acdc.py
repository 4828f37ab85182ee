"""Collect a real-ACDC run's figures into ``reports/real-acdc/``: ``summary.json`` (for machines),
``summary.md`` (the tables with the study's figures beside ours), the per-epoch curves of every
segmenter and their time-to-Dice picture.

The run is a project folder where the cardiac pipeline ran on real ACDC (``acdc.raw`` set,
e.g. ``profile: cpu``). Training figures (time, epochs, curves) and the correctors' figures are
read from its metrics files, as the stages wrote and logged them. The segmenters' test figures
are recomputed from their checkpoints on the run's test split with this checkout's metrics
(``--reevaluate``, the default), so a metric fixed after the training (anatomical validity, the
``emptied`` count, the per-volume Dice) applies to the same models; ``code_commit`` and
``commit`` then say which code measured and which trained.

A segmenter retrained later in another project folder (a newer recipe) is taken from there with
``--segmenter ARCH=FOLDER``; its row then carries the commit its training run logged (seglab's
own checkout, ``seglab.git.commit``; the folder's commit for older runs), and the correctors' rows
keep saying which segmenters fed them (``correction_inputs_commit``). With ``--keep``, what the
run lacks (a segmenter it did not train, the correction study) is kept from the existing
``summary.json``, each row with the commit that made it.

    uv run --frozen python benchmarks/summarize_real_acdc.py /path/to/project \\
        --segmenter resunet=/path/to/newer --out reports/real-acdc
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import time_to_dice
import yaml

from seglab.config import CardiacParams, load_params
from seglab.data.store import load_split
from seglab.evaluation.segmentation import choose_inference, evaluate
from seglab.inference.segment import load_segmenter, predict_labels
from seglab.io import write_json
from seglab.metrics.overlap import STRUCTURES, Case, overlap
from seglab.tracking.runs import code_commit

ROOT = Path(__file__).resolve().parents[1]

#: The study's test Dice per segmenter, and of the correctors on their inputs.
STUDY = {
    "unet": 0.8866,
    "resunet": 0.9037,
    "attunet": 0.9162,
    "swinunetr": 0.8952,
    "segmenters": 0.8973,
    "nvae": 0.8964,
    "context": 0.8577,
}
SEGMENTER_KEYS = (
    "dice_mean",
    "dice_lv",
    "dice_myo",
    "dice_rv",
    "hd95_mean",
    "anatomical_validity",
    "train_seconds",
    "epochs",
    "params_count",
)
#: Recomputed with this code: emptied masks and the per-volume (challenge) Dice.
EXTRA_KEYS = (
    "emptied",
    "dice3d_mean",
    "dice3d_lv",
    "dice3d_myo",
    "dice3d_rv",
    "postprocess",
    "where_lost",
)
FIGURE_KEYS = ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "hd95_mean", "anatomical_validity")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _commit(project: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return f"{commit}{'+dirty' if dirty else ''}" if commit else "unknown"


def _trained_at(folder: Path, params: CardiacParams, arch: str) -> str:
    """The commit of the code that trained ``arch`` in ``folder``: its final run's
    ``seglab.git.commit`` tag, else the folder's own commit (runs logged before that tag)."""
    final = f"tags.arch = '{arch}' and tags.role = 'final'"  # the segmenter stage's
    return code_commit(params.tracking, folder, final) or _commit(folder)


def reevaluate(project: Path, params: CardiacParams, arch: str) -> dict[str, Any]:
    """Test figures of ``arch``'s checkpoint on the run's test split, with this code's metrics
    and its post-processing, chosen again on the run's validation split (never on test)."""
    folder = project / params.acdc.prepared
    module = load_segmenter(params.segmenters.checkpoint_path(arch, project))
    trainer = params.segmenters.train_for(arch).trainer
    val, test = load_split(folder / "val.npz"), load_split(folder / "test.npz")
    flips, cleanup, _ = choose_inference(module, val, trainer, params.segmenters)
    module.hparams.update(cleanup.hparams())
    pred = predict_labels(module, test, trainer)
    return {
        **evaluate(pred, test),
        "postprocess": ("flips, " if flips else "") + cleanup.describe(),
        "where_lost": where_lost(pred, test),
    }


def where_lost(pred: Any, test: Any) -> dict[str, dict[str, float]]:
    """Per structure, what its per-slice mean Dice is made of: the Dice of the slices where
    both masks have it, and the slices that count 0: a false positive (the ground truth has no
    such structure there, usually beyond the base or the apex) or a miss."""
    result = overlap(pred, test.label, test.spacing)
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(STRUCTURES):
        case, dice = result.case[:, j], result.dice[:, j]
        both = case == Case.BOTH_PRESENT
        out[name] = {
            "dice": float(np.nanmean(dice)),
            "dice_where_both": float(dice[both].mean()),
            "slices_both": int(both.sum()),
            "false_positive_slices": int((case == Case.ABSENT_IN_GT).sum()),
            "missed_slices": int((case == Case.ABSENT_IN_PRED).sum()),
        }
    return out


def collect(
    project: Path,
    params: CardiacParams,
    recompute: bool,
    elsewhere: dict[str, tuple[Path, CardiacParams]] | None = None,
) -> dict[str, Any]:
    """The run's figures; ``elsewhere`` maps an architecture to the project (and params) that
    trained it when that is not ``project``."""
    meta = _read(project / params.acdc.prepared / "meta.json") or {}
    segmenters: dict[str, Any] = {}
    for arch in params.segmenters.archs:
        folder, run = (elsewhere or {}).get(arch, (project, params))
        figures = _read(run.segmenters.metrics_path(arch, folder))
        # The metrics files are tracked in git (the quick profile's): without the checkpoint
        # this run trained, the file is not this run's.
        if figures is None or not run.segmenters.checkpoint_path(arch, folder).is_file():
            continue
        if recompute:
            figures = {**figures, **reevaluate(folder, run, arch)}
        row = {k: figures.get(k) for k in (*SEGMENTER_KEYS, *EXTRA_KEYS)}
        segmenters[arch] = {
            **row,
            "study_dice_mean": STUDY[arch],
            "commit": _trained_at(folder, run, arch),
        }
    correctors: dict[str, Any] = {}
    for variant in params.correctors.variants:
        figures = _read(params.correctors.metrics_path(variant, project))
        if (
            figures is None
            or not (project / params.correctors.predictions / f"{variant}.npz").is_file()
        ):
            continue  # a tracked quick-profile file, not this run's (its predictions are absent)
        for prefix, name in (("", variant), ("gated_", f"{variant}-gated")):
            row = {k: figures.get(f"{prefix}{k}") for k in FIGURE_KEYS}
            row |= {"input_dice_mean": figures.get("input_dice_mean")}
            row |= {"input_anatomical_validity": figures.get("input_anatomical_validity")}
            row |= {"train_seconds": figures.get("train_seconds")}
            if prefix:  # the gate the stage chose on validation (None: a fixed gate's run)
                row["gate"] = (figures.get("gate") or {}).get("chosen")
            else:
                row["study_dice_mean"] = STUDY.get(variant)
            correctors[name] = row
    nvae = _read(project / params.nvae.metrics / "nvae.json")
    if not (project / params.nvae.models / "nvae.ckpt").is_file():
        nvae = None  # the tracked quick-profile file, not this run's (its checkpoint is absent)
    test_patients = meta.get("splits", {}).get("test", [])
    return {
        "profile": params.profile,
        "commit": _commit(project),
        "code_commit": _commit(ROOT) if recompute else _commit(project),
        "recomputed": recompute,
        "cores": os.cpu_count(),
        "data": str(params.acdc.raw),
        "crop": params.acdc.prepare.crop,
        "test_patients": len(test_patients),
        "test_slices": meta.get("slices", {}).get("test"),
        "segmenters": segmenters,
        "nvae": None if nvae is None else {k: nvae.get(k) for k in FIGURE_KEYS},
        "correctors": correctors,
        "correction": _read(project / params.correction.metrics) if correctors else None,
        "correction_inputs_commit": _commit(project) if correctors else None,
    }


def keep_missing(summary: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the segmenters it lacks taken from ``earlier``, and the correction
    study too when it has none (each keeps the commit it was made at). A run outside git (a
    segmenter retrained in a bare project folder) names no commit: the earlier run's stays."""
    kept = {**summary, "segmenters": {**summary["segmenters"]}}
    if summary.get("commit", "unknown") == "unknown":
        kept["commit"] = earlier.get("commit", "unknown")
    for arch, row in earlier.get("segmenters", {}).items():
        kept["segmenters"].setdefault(arch, row)
    if not summary["correctors"]:
        for key in ("nvae", "correctors", "correction", "correction_inputs_commit"):
            kept[key] = earlier.get(key)
    return kept


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Real ACDC: profile `{summary['profile']}`, commit `{summary['commit'][:12]}`",
        "",
        f"Data `{summary['data']}`, crop `{summary['crop']}`, test split "
        f"{summary['test_patients']} patients / {summary['test_slices']} slices, "
        f"{summary['cores']} cores.",
        "",
        "| segmenter | Dice mean | LV | MYO | RV | HD95 mm | validity | emptied | 3D Dice "
        "| train min | epochs | params | clean-up (val) | study Dice | trained at |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, r in summary["segmenters"].items():
        cells = [arch, *(_cell(r[k]) for k in FIGURE_KEYS[:4]), _cell(r["hd95_mean"], 1)]
        cells += [_cell(r["anatomical_validity"]), _cell(r["emptied"]), _cell(r["dice3d_mean"])]
        cells += [_cell((r["train_seconds"] or 0) / 60, 1)]
        cells += [_cell(r["epochs"]), f"{(r['params_count'] or 0) / 1e6:.2f}M"]
        cells += [_cell(r.get("postprocess")), _cell(r["study_dice_mean"], 4)]
        cells += [f"`{r.get('commit', '')[:7]}`"]
        lines.append("| " + " | ".join(cells) + " |")
    lost = {a: r["where_lost"] for a, r in summary["segmenters"].items() if r.get("where_lost")}
    if lost:
        lines += [
            "",
            "Where per-slice Dice is lost (test): per structure, the Dice of the slices where "
            "both masks have it, and the slices that count 0 (false positive: the ground truth "
            "has no such structure on that slice; missed: the prediction has none).",
            "",
            "| segmenter | structure | Dice | Dice where both | slices both | false positive "
            "| missed |",
            "|---|---|---|---|---|---|---|",
        ]
        for arch, per in lost.items():
            for name, r in per.items():
                cells = [arch, name, _cell(r["dice"]), _cell(r["dice_where_both"])]
                cells += [str(r[k]) for k in ("slices_both", "false_positive_slices")]
                cells += [str(r["missed_slices"])]
                lines.append("| " + " | ".join(cells) + " |")
    if summary["correctors"]:
        lines += [
            "",
            "Correctors: trained and evaluated at "
            f"`{(summary.get('correction_inputs_commit') or '')[:7]}` on ACDCSeg as that run's "
            "segmenters predicted it.",
            "",
            "| corrector | input Dice | Dice mean | LV | MYO | RV | HD95 mm | input validity "
            "| validity | gate (chosen on val) | study Dice |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in summary["correctors"].items():
            cells = [name, _cell(r["input_dice_mean"]), *(_cell(r[k]) for k in FIGURE_KEYS[:4])]
            cells += [_cell(r["hd95_mean"], 1), _cell(r["input_anatomical_validity"])]
            cells += [_cell(r["anatomical_validity"]), _cell(r.get("gate"))]
            cells += [_cell(r.get("study_dice_mean"), 4)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="project folder of the real-ACDC run")
    parser.add_argument("--params", default="params.yaml", help="relative to the project")
    parser.add_argument("--out", type=Path, default=Path("reports/real-acdc"))
    parser.add_argument(
        "--no-reevaluate",
        dest="reevaluate",
        action="store_false",
        help="take the segmenters' test figures from the run's metrics files as they are",
    )
    parser.add_argument(
        "--segmenter",
        action="append",
        default=[],
        metavar="ARCH=FOLDER",
        help="take this architecture from another project folder (a later training)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the existing summary's rows that this run lacks (with their commits)",
    )
    args = parser.parse_args(argv)
    project = args.project.resolve()
    params = load_params(project / args.params, CardiacParams)
    elsewhere = {}
    for item in args.segmenter:
        arch, _, folder = item.partition("=")
        folder_path = Path(folder).resolve()
        elsewhere[arch] = (folder_path, load_params(folder_path / args.params, CardiacParams))
    summary = collect(project, params, args.reevaluate, elsewhere)
    out = args.out
    if args.keep and (out / "summary.json").is_file():
        summary = keep_missing(summary, json.loads((out / "summary.json").read_text()))
    (out / "curves").mkdir(parents=True, exist_ok=True)
    curves = []
    for arch in summary["segmenters"]:
        folder, run = elsewhere.get(arch, (project, params))
        source = run.segmenters.curves_path(arch, folder)
        # a tracked quick-profile file is not this run's (as in collect: no checkpoint)
        if source.is_file() and run.segmenters.checkpoint_path(arch, folder).is_file():
            shutil.copy(source, out / "curves" / source.name)
        if (out / "curves" / source.name).is_file():  # copied now, or kept from an earlier run
            curves.append(f"{arch}={out / 'curves' / source.name}")
    if curves:
        summary["time_to_dice"] = time_to_dice.main(
            [*curves, "--out", str(out / "time_to_dice.png")]
        )
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(markdown(summary))
    (out / "params.yaml").write_text(
        yaml.safe_dump(yaml.safe_load((project / args.params).read_text()), sort_keys=False)
    )
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
