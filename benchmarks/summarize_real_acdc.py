"""Collect a real-ACDC run's figures into ``reports/real-acdc/``: ``summary.json`` (for machines),
``summary.md`` (the tables with the study's figures beside ours), the per-epoch curves of every
segmenter and their time-to-Dice picture.

The run is a project folder where the cardiac pipeline ran on real ACDC (``acdc.raw`` set,
e.g. ``profile: cpu``); everything is read from its metrics files, never recomputed, so the
summary holds exactly what the stages measured and logged to MLflow.

    uv run --frozen python benchmarks/summarize_real_acdc.py /path/to/project \\
        --out reports/real-acdc
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

import time_to_dice
import yaml

from seglab.config import CardiacParams, load_params
from seglab.io import write_json

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
FIGURE_KEYS = ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "hd95_mean", "anatomical_validity")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _commit(project: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return f"{commit}{'+dirty' if dirty else ''}"


def collect(project: Path, params: CardiacParams) -> dict[str, Any]:
    meta = _read(project / params.acdc.prepared / "meta.json") or {}
    seg_dir = project / params.segmenters.metrics
    segmenters: dict[str, Any] = {}
    for arch in params.segmenters.archs:
        figures = _read(seg_dir / f"{arch}.json")
        if figures is not None:
            row = {k: figures.get(k) for k in SEGMENTER_KEYS}
            segmenters[arch] = {**row, "study_dice_mean": STUDY[arch]}
    correctors: dict[str, Any] = {}
    for variant in params.correctors.variants:
        figures = _read(project / params.correctors.metrics / f"{variant}.json")
        if figures is None:
            continue
        for prefix, name in (("", variant), ("gated_", f"{variant}-gated")):
            row = {k: figures.get(f"{prefix}{k}") for k in FIGURE_KEYS}
            row |= {"input_dice_mean": figures.get("input_dice_mean")}
            row |= {"input_anatomical_validity": figures.get("input_anatomical_validity")}
            row |= {"train_seconds": figures.get("train_seconds")}
            if not prefix:
                row["study_dice_mean"] = STUDY.get(variant)
            correctors[name] = row
    nvae = _read(project / params.nvae.metrics / "nvae.json")
    splits = meta.get("splits", {})
    test = splits.get("test", {}) if isinstance(splits, dict) else {}
    return {
        "profile": params.profile,
        "commit": _commit(project),
        "cores": os.cpu_count(),
        "data": str(params.acdc.raw),
        "crop": params.acdc.prepare.crop,
        "test_patients": test.get("patients"),
        "test_slices": test.get("slices"),
        "segmenters": segmenters,
        "nvae": None if nvae is None else {k: nvae.get(k) for k in FIGURE_KEYS},
        "correctors": correctors,
        "correction": _read(project / params.correction.metrics),
    }


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
        "| segmenter | Dice mean | LV | MYO | RV | HD95 mm | validity | train min | epochs "
        "| params | study Dice |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, r in summary["segmenters"].items():
        cells = [arch, *(_cell(r[k]) for k in FIGURE_KEYS[:4]), _cell(r["hd95_mean"], 1)]
        cells += [_cell(r["anatomical_validity"]), _cell((r["train_seconds"] or 0) / 60, 1)]
        cells += [_cell(r["epochs"]), f"{(r['params_count'] or 0) / 1e6:.2f}M"]
        cells += [_cell(r["study_dice_mean"], 4)]
        lines.append("| " + " | ".join(cells) + " |")
    if summary["correctors"]:
        lines += [
            "",
            "| corrector | input Dice | Dice mean | LV | MYO | RV | HD95 mm | input validity "
            "| validity | study Dice |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in summary["correctors"].items():
            cells = [name, _cell(r["input_dice_mean"]), *(_cell(r[k]) for k in FIGURE_KEYS[:4])]
            cells += [_cell(r["hd95_mean"], 1), _cell(r["input_anatomical_validity"])]
            cells += [_cell(r["anatomical_validity"]), _cell(r.get("study_dice_mean"), 4)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="project folder of the real-ACDC run")
    parser.add_argument("--params", default="params.yaml", help="relative to the project")
    parser.add_argument("--out", type=Path, default=Path("reports/real-acdc"))
    args = parser.parse_args(argv)
    project = args.project.resolve()
    params = load_params(project / args.params, CardiacParams)
    summary = collect(project, params)
    out = args.out
    (out / "curves").mkdir(parents=True, exist_ok=True)
    curves = []
    for arch in summary["segmenters"]:
        source = project / params.segmenters.metrics / f"{arch}.curves.csv"
        if source.is_file():
            shutil.copy(source, out / "curves" / source.name)
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
