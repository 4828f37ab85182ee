"""Collect a real-LGG run's figures into ``reports/real-lgg/``: ``summary.json`` (per network
the tumour-slice Dice, IoU, training time, size and the commit of the code that trained it; the
profile, data and machine) and the comparison stage's table and figures as the run wrote them.

The run is a project folder where ``dvc repro pipelines/lgg/dvc.yaml`` ran on the real LGG zip
(``lgg.raw`` set, e.g. ``profile: cpu``)::

    uv run --frozen python benchmarks/summarize_real_lgg.py /path/to/project --out reports/real-lgg
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seglab.config import BrainParams, load_params, split_arch_name
from seglab.io import write_json
from seglab.tracking.runs import code_commit

#: Buda et al. (2019): U-Net, 110 patients, 256 px, mean Dice per volume 82% (their best 84%).
STUDY_DICE = 0.82
KEYS = (
    "dice_tumour_slices",
    "iou",
    "iou_tumour_slices",
    "dice_mean",
    "accuracy",
    "train_seconds",
    "epochs",
    "epochs_to_best",
    "best_val_iou",
    "params_count",
    "model_mb",
    "slices_per_second",
)


def _commit(project: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(project), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _trained_at(project: Path, params: BrainParams, name: str) -> str:
    """The commit of the code that trained network ``name``: its run's ``seglab.git.commit``
    tag, else the project folder's own commit (runs logged before that tag)."""
    decoder, encoder = split_arch_name(name)
    run = f"tags.arch = '{decoder}' and tags.encoder = '{encoder}'"  # the train stage's
    return code_commit(params.tracking, project, run) or _commit(project)


def _last_val_iou(path: Path) -> float | None:
    """The last epoch's validation IoU in a curves file (None for runs made before the stage
    wrote one): the kept epoch's with ``trainer.keep: last``."""
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["val_iou"]) if rows else None


def collect(project: Path, params_file: str) -> dict[str, Any]:
    params = load_params(project / params_file, BrainParams)
    archs = params.architectures
    networks: dict[str, dict[str, Any]] = {}
    for name in archs.names:
        result = json.loads(archs.metrics_path(name, project).read_text())
        networks[name] = {key: result.get(key) for key in KEYS}
        networks[name]["last_val_iou"] = _last_val_iou(archs.curves_path(name, project))
        networks[name]["commit"] = _trained_at(project, params, name)
    meta = json.loads((project / params.lgg.prepared / "meta.json").read_text())
    splits = meta.get("splits", {})
    best = max(networks, key=lambda n: networks[n]["dice_tumour_slices"] or 0.0)
    trainer = archs.train.trainer
    return {
        "profile": params.profile,
        "commit": ", ".join(sorted({n["commit"] for n in networks.values()})) or "unknown",
        "data": str(params.lgg.raw),
        "image_size": params.lgg.prepare.size,
        "patients": {split: len(ids) for split, ids in splits.items()},
        "cores": os.cpu_count(),
        "budget_minutes": trainer.max_minutes,
        "threads": trainer.threads,
        "keep": trainer.keep,
        **archs.train.settings(),
        "batch_size": trainer.batch_size,
        "encoder_weights": archs.train.encoder_weights or "random",
        "best": best,
        "study_dice": STUDY_DICE,
        "networks": networks,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="project folder of the real-LGG run")
    parser.add_argument("--params", default="pipelines/lgg/params.yaml")
    parser.add_argument("--out", type=Path, default=Path("reports/real-lgg"))
    args = parser.parse_args(argv)
    summary = collect(args.project, args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "summary.json", summary)
    params = load_params(args.project / args.params, BrainParams)
    for path in (args.project / params.architectures.report).iterdir():
        if path.suffix in (".md", ".csv", ".png"):
            shutil.copy2(path, args.out / path.name)
    print(json.dumps({n: v["dice_tumour_slices"] for n, v in summary["networks"].items()}))
    return summary


if __name__ == "__main__":
    main()
