"""The study-size profile proven to run: every training and evaluation stage of the cardiac
pipeline at ``profile: full``'s network sizes and settings, one or two batches each, on the CPU.

The full profile (64..1024-channel segmenters, SwinUNETR 48, the (4, 2, 1) NVAE at stem 4 and
the search's stem 64, 5-fold cross-prediction) is meant for a GPU; this checks on any machine
that each stage builds its networks, trains a step, evaluates, exports and registers at those
sizes, and prints the wall time, peak memory (RSS of the stage's process) and the project
folder's size on disk after each, which is what a GPU user needs to size a machine. What is
shortened, and only that: epochs (1), batches per epoch (``--batches``), the NVAE's prior
samples (``--samples``, 1000 in the profile) and the search (one grid trial at stem 64 instead
of the 27 at stem 4).

    uv run --frozen python benchmarks/bench_full_profile.py                # phantom, ~20 min
    uv run --frozen python benchmarks/bench_full_profile.py --json full.json --keep /tmp/full

Each stage is the command its DVC stage runs (``dvc.yaml``), in a fresh project folder holding a
copy of ``params.yaml`` with those overrides; the stages run with this environment's ``seglab``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from seglab.config import merge_mappings
from seglab.io import write_json

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("unet", "resunet", "attunet", "swinunetr")


def overrides(batches: int, samples: int, patients: int) -> dict[str, Any]:
    """What the check shortens; every size and setting else is the full profile's."""
    short = {"max_epochs": 1, "limit_train_batches": batches, "limit_val_batches": batches}
    return {
        "profile": "full",
        "acdc": {"phantom": {"patients": patients}},
        "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
        "profiles": {
            "full": {
                "segmenters": {
                    "train": {"trainer": short},
                    "arch_train": {arch: {"trainer": short} for arch in ARCHS},
                },
                "nvae": {"trainer": short, "samples": samples},
                "correctors": {"nvae": {"trainer": short}, "context": {"trainer": short}},
                "search": {
                    "n_trials": 1,
                    "grid": {"stem_channels": [64]},
                    "trainer": {**short, "batch_size": 8},
                },
            }
        },
    }


def stages(patients: int) -> list[tuple[str, list[str]]]:
    """(name, seglab arguments) in the pipeline's order, as dvc.yaml runs them."""
    params = ["--params", "params.yaml"]
    steps = [
        ("phantom_acdc", ["phantom", "acdc", "data/phantom/acdc", "--patients", str(patients)]),
        ("prepare_acdc", ["prepare", "acdc", *params]),
    ]
    steps += [(f"train_segmenter@{a}", ["train", "segmenter", "--arch", a, *params]) for a in ARCHS]
    steps += [
        ("acdcseg", ["acdcseg", "build", *params]),
        ("acdc3gram", ["acdcseg", "trigram", *params]),
        ("train_nvae", ["train", "nvae", *params]),
        ("search_nvae (stem 64)", ["search", "nvae", "--target", "gt", *params]),
        ("train_corrector@nvae", ["train", "corrector", "--variant", "nvae", *params]),
        ("train_corrector@context", ["train", "corrector", "--variant", "context", *params]),
        ("correction_report", ["evaluate", "correction", *params]),
    ]
    return steps


def run(folder: Path, args: Sequence[str]) -> tuple[int, float, float, str]:
    """Exit code, wall seconds, peak RSS (MiB) of the stage's process, and its output's tail."""
    seglab = Path(sys.executable).with_name("seglab")
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([str(seglab), *args], cwd=folder, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        log.seek(0)
        tail = log.read()[-3000:]
    return os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss / 1024, tail


def folder_gib(folder: Path) -> float:
    """Size on disk of everything under ``folder`` (checkpoints, MLflow artifacts, data)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**30


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=1, help="batches per epoch (train, val)")
    parser.add_argument("--samples", type=int, default=16, help="NVAE prior samples")
    parser.add_argument("--patients", type=int, default=20, help="phantom patients")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args(argv)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="seglab-full-"))
    folder.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = merge_mappings(params, overrides(args.batches, args.samples, args.patients))
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "search", folder / "search", dirs_exist_ok=True)
    rows: list[dict[str, Any]] = []
    free = shutil.disk_usage(folder).free / 2**30
    print(f"project folder {folder}, {free:.1f} GiB free on its disk", flush=True)
    print(f"{'stage':<26} {'rc':>3} {'seconds':>8} {'peak MiB':>9} {'disk GiB':>9}", flush=True)
    for name, command in stages(args.patients):
        code, seconds, peak, tail = run(folder, command)
        disk = folder_gib(folder)
        rows.append(
            {"stage": name, "rc": code, "seconds": seconds, "peak_rss_mib": peak, "disk_gib": disk}
        )
        print(f"{name:<26} {code:>3} {seconds:>8.1f} {peak:>9.0f} {disk:>9.1f}", flush=True)
        if code != 0:
            free = shutil.disk_usage(folder).free / 2**30
            print(f"{name} failed ({free:.1f} GiB free on disk); its output ends:", file=sys.stderr)
            print(tail, file=sys.stderr)
            break
    if args.json:
        write_json(args.json, {"stages": rows, "batches": args.batches, "samples": args.samples})
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":
    failed = [row for row in main() if row["rc"] != 0]
    sys.exit(1 if failed else 0)
