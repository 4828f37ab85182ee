"""The study on one GPU in a fixed budget: the four segmenters at the ``full`` profile's sizes
(64..1024 channels, SwinUNETR 48) and the NVAE of ground-truth masks (stem 4, beta (8, 10, 11),
groups (4, 2, 1)), each trained within its share of the minutes on a pack of the prepared real
ACDC (``pack.py``), then tested.

Built to use a lent GPU at once (``run.sh`` is the one command the device tool runs): the whole
pack sits in GPU memory, bf16 autocast, channels-last, optional ``torch.compile``. For each model
it prints and writes (``--out``, JSON) training slices/s, peak GPU memory, mean GPU utilisation,
the wall time at which validation first reached the target (Dice 0.90 for a segmenter, 0.949 for
the NVAE: the study's reconstruction figure), the best validation Dice and its epoch, and the
test figures of the best epoch (the project's per-slice Dice and HD95, validity, 3D Dice). The
test split is only scored, never used to choose.

The same code runs on a CPU at tiny sizes (``--tiny``, what the test suite runs), so it is known
to work before a GPU is lent. It needs no MLflow, DVC or Optuna: the GPU machine lacks them.

    python benchmarks/gpu/bench_gpu.py --pack .gpupack/acdc.npz --out gpu.json   # on the GPU
    uv run python benchmarks/gpu/bench_gpu.py --pack pack.npz --tiny              # dry run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack import load_pack  # noqa: E402

from seglab.config import (  # noqa: E402
    CardiacParams,
    TrainerParams,
    apply_profile,
    merge_mappings,
)
from seglab.data.acdcseg import nvae_tensors  # noqa: E402
from seglab.data.store import SliceSet  # noqa: E402
from seglab.evaluation.segmentation import evaluate  # noqa: E402
from seglab.inference.segment import load_segmenter, predict_labels  # noqa: E402
from seglab.models.segmenters import ARCHS, parameter_count  # noqa: E402
from seglab.training.fit import fit  # noqa: E402
from seglab.training.nvae_fit import train_nvae_model  # noqa: E402
from seglab.training.segmenters import MONITOR, new_module, segmenter_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"segmenter": 0.90, "nvae": 0.949}
TINY = {  # the --tiny overlay: sizes that train a step on a CPU in well under a second
    "segmenters": {
        "nets": {
            "unet": {"channels": [4, 8, 16]},
            "resunet": {"channels": [4, 8, 16]},
            "attunet": {"channels": [4, 8, 16]},
            "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
        }
    },
    "nvae": {"model": {"stem_channels": 2, "groups_per_scale": [1, 1, 1], "latent_channels": 2}},
}


def full_params(tiny: bool) -> CardiacParams:
    """params.yaml under ``profile: full`` (with the tiny sizes for a dry run)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = apply_profile({**raw, "profile": "full"})
    return CardiacParams.model_validate(merge_mappings(merged, TINY) if tiny else merged)


class Utilisation:
    """Mean GPU utilisation (%) sampled every half second through NVML (None without one)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML: a CPU dry run, or a driver without it
            self._nvml = None

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    @contextmanager
    def watch(self) -> Iterator[None]:
        self.samples, thread = [], None
        self._stop.clear()
        if self._nvml is not None:
            thread = threading.Thread(target=self._sample, daemon=True)
            thread.start()
        try:
            yield
        finally:
            self._stop.set()
            if thread is not None:
                thread.join()

    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def trainer_for(base: TrainerParams, minutes: float, args: argparse.Namespace) -> TrainerParams:
    """The profile's trainer on this device, within ``minutes``, with the speed settings."""
    gpu = torch.cuda.is_available()
    return base.model_copy(
        update={
            "accelerator": "gpu" if gpu else "cpu",
            "devices": 1,
            "strategy": "auto",
            "precision": "bf16-mixed" if gpu else "32-true",
            "channels_last": True,
            "compile": args.compile and gpu,
            "threads": None,
            "max_minutes": minutes,
            "max_epochs": args.max_epochs,
            "early_stopping_patience": None,
            "batch_size": args.batch or base.batch_size,
            "limit_train_batches": 2 if args.tiny else 1.0,
            "limit_val_batches": 2 if args.tiny else 1.0,
        }
    )


def on_device(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The whole split in GPU memory: batches are indexed there, never copied per step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return tuple(t.to(device) for t in tensors)


def curve_figures(history: Sequence[dict[str, float]], slices: int, target: float) -> dict:
    """Speed and time to ``target`` from the per-epoch rows of a fit."""
    dice = [row.get(MONITOR, float("nan")) for row in history]
    best = int(np.nanargmax(dice)) if history and not np.all(np.isnan(dice)) else None
    reached = next((row["seconds"] for row in history if row.get(MONITOR, 0) >= target), None)
    seconds = history[-1]["seconds"] if history else 0.0
    return {
        "epochs": len(history),
        "train_seconds": seconds,
        "slices_per_second": slices * len(history) / seconds if seconds else None,
        "best_val_dice": dice[best] if best is not None else None,
        "best_epoch": best + 1 if best is not None else None,
        f"seconds_to_val_dice_{target}": reached,
        "val_dice_curve": dice,
    }


def peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def run_segmenter(
    arch: str, params: CardiacParams, splits: dict[str, SliceSet], args: argparse.Namespace
) -> dict[str, Any]:
    train = params.segmenters.train_for(arch)
    trainer = trainer_for(train.trainer, args.segmenter_minutes, args)
    module = new_module(arch, params.segmenters)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # batches indexed in GPU memory
    data = segmenter_data(splits, train, batch_size=trainer.batch_size, device=device)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    utilisation = Utilisation()
    with tempfile.TemporaryDirectory() as work, utilisation.watch():
        fitted = fit(module, data, trainer, Path(work), monitor=MONITOR, log_every_n_steps=1)
        best = load_segmenter(fitted.best_path)
        test = evaluate(predict_labels(best, splits["test"], trainer, raw=True), splits["test"])
    return {
        "model": arch,
        "params_count": parameter_count(best.net),
        "batch_size": trainer.batch_size,
        **curve_figures(fitted.history, len(splits["train"]), TARGETS["segmenter"]),
        "peak_gpu_memory_gib": peak_memory_gib(),
        "gpu_utilisation_percent": utilisation.mean(),
        "test": {k: v for k, v in test.items() if isinstance(v, int | float)},
    }


def run_nvae(
    params: CardiacParams, splits: dict[str, SliceSet], args: argparse.Namespace
) -> dict[str, Any]:
    trainer = trainer_for(params.nvae.trainer, args.nvae_minutes, args)
    data = {name: on_device(*nvae_tensors(splits[name], "gt")) for name in ("train", "val")}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    utilisation = Utilisation()
    with tempfile.TemporaryDirectory() as work, utilisation.watch():
        fitted = train_nvae_model(params.nvae.model, trainer, data, Path(work))
    inputs, _ = nvae_tensors(splits["test"], "gt")
    with torch.no_grad():
        logits = torch.cat([fitted.module.model(x, sample=False).logits for x in inputs.split(64)])
    test = evaluate(logits.argmax(dim=1).numpy().astype(np.uint8), splits["test"])
    return {
        "model": "nvae",
        "params_count": parameter_count(fitted.module.model),
        "batch_size": trainer.batch_size,
        **curve_figures(fitted.history, len(splits["train"]), TARGETS["nvae"]),
        "peak_gpu_memory_gib": peak_memory_gib(),
        "gpu_utilisation_percent": utilisation.mean(),
        "test": {k: v for k, v in test.items() if isinstance(v, int | float)},
    }


def line(row: dict[str, Any], target: float) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    test = row["test"]
    return (
        f"{row['model']:<10} {row['epochs']:>3} ep {fmt(row['slices_per_second'], '8.0f')} sl/s "
        f"mem {fmt(row['peak_gpu_memory_gib'], '5.1f')} GiB "
        f"util {fmt(row['gpu_utilisation_percent'], '3.0f')}%  "
        f"to {target}: {fmt(row[f'seconds_to_val_dice_{target}'], '6.1f')} s  "
        f"best val {fmt(row['best_val_dice'], '.4f')}  test Dice {test['dice_mean']:.4f} "
        f"3D {test['dice3d_mean']:.4f} HD95 {fmt(test['hd95_mean'], '.1f')} "
        f"valid {test['anatomical_validity']:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True, help="from benchmarks/gpu/pack.py")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--segmenter-minutes", type=float, default=1.25, help="per segmenter")
    parser.add_argument("--nvae-minutes", type=float, default=2.0)
    parser.add_argument("--max-epochs", type=int, default=1000, help="the minutes stop first")
    parser.add_argument("--batch", type=int, help="training batch (default: the profile's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--no-nvae", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, 2 batches: a dry run")
    args = parser.parse_args(argv)
    params = full_params(args.tiny)
    splits = load_pack(args.pack)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device {device}, slices { ({k: len(v) for k, v in splits.items()}) }", flush=True)
    report: dict[str, Any] = {"device": device, "args": vars(args) | {"pack": str(args.pack)}}
    start = time.perf_counter()
    rows = []
    for arch in args.archs:
        rows.append(run_segmenter(arch, params, splits, args))
        print(line(rows[-1], TARGETS["segmenter"]), flush=True)
    if not args.no_nvae:
        rows.append(run_nvae(params, splits, args))
        print(line(rows[-1], TARGETS["nvae"]), flush=True)
    report.update(models=rows, wall_seconds=time.perf_counter() - start)
    print(f"wall {report['wall_seconds']:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    from seglab.quiet import quiet_libraries

    quiet_libraries()
    main()
