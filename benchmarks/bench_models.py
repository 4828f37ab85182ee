"""Training and inference throughput, peak memory and size of every model of the project, or
the wall time of an NVAE training to a validation Dice.

    uv run --frozen python benchmarks/bench_models.py                      # CPU-sized defaults
    uv run --frozen python benchmarks/bench_models.py --sizes full --models unet swinunetr
    uv run --frozen python benchmarks/bench_models.py --device cuda --precision bf16 \\
        --channels-last --models all --json bench.json --mlflow
    uv run --frozen python benchmarks/bench_models.py --time-to-dice 0.949 --sizes full \\
        --data data/prepared/acdc --device cuda --precision bf16

Models: the four ACDC segmenters at the sizes and inputs of params.yaml (``--sizes quick``: its
top level; ``cpu``: ``profiles.cpu``, the real-data profile, whose inputs add the neighbouring
slices and the place in the stack as channels; ``full``: ``profiles.full``, the study's), built
and trained as the segmenter stage does (``SegmentationModule``: Dice + cross-entropy, Adam);
the NVAE with the study's hierarchy (groups 4,2,1, latent 20) at stem 4 and stem 64
(``nvae-stem64`` is heavy: left out by default on a CPU) and the context NVAE (12 input
channels), trained with the study's objective (``NvaeModule.training_step``) and Adamax; the
brain study's architectures (``lgg-<name>`` of pipelines/lgg/params.yaml, random init, 3 x size
x size inputs at the brain params' size).

Throughput: ``--warmup`` untimed steps, then ``--steps`` timed ones on one batch of heart-like
masks already on the device (the data pipeline is ``bench_data.py``'s; augmentation belongs to
it): forward + loss + backward + optimiser step; inference is the eval-mode forward under
``no_grad`` (the NVAE's posterior-mean reconstruction). Memory: peak GPU allocation per phase
(``max_memory_allocated``) and the peak resident host memory above what was resident before
the model was built (sampled every 20 ms). Figures are per process state, one model after the
other; a busy machine (see the load average printed above the table) lowers them.

``--time-to-dice D`` trains the NVAE on the prepared ground-truth masks of ``--data`` through
the stage's own training function (``seglab.training.nvae_fit.train_nvae_model``: Lightning, the
module's Adamax + cosine schedule, best/last checkpoints) with whole epochs and
``--max-epochs``, stopping once the validation Dice reaches D or ``--time-limit`` passes; it
prints every epoch's wall time and validation figures.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import common
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from seglab.config import BrainParams, CardiacParams, NvaeParams, TrainerParams
from seglab.data.acdcseg import nvae_tensors, onehot
from seglab.data.store import input_channels, load_split
from seglab.errors import SeglabError
from seglab.models.segmenters import ARCHS, parameter_count, weights_mb
from seglab.training import lgg as lgg_training
from seglab.training.fit import apply_speedups
from seglab.training.nvae_fit import train_nvae_model
from seglab.training.nvae_module import NvaeModule
from seglab.training.segmenters import new_module

Family = Literal["segmenter", "nvae", "lgg"]
#: The study's context NVAE: 3-gram input (previous, current, next mask), beta (1, 1, 5).
CONTEXT_NVAE = NvaeParams(in_channels=12, beta=(1.0, 1.0, 5.0))
HEAVY = ("nvae-stem64",)  # left out of the default selection on a CPU
COLUMNS = {
    "model": "model",
    "input": "input",
    "params_count": "params",
    "model_mb": "MB",
    "train_slices_per_s": "train slices/s",
    "train_ms_per_step": "ms/step",
    "infer_slices_per_s": "infer slices/s",
    "warmup_s": "warm-up s",
    "host_peak_mb": "host peak MB",
}
GPU_COLUMNS = {
    "gpu_train_mb": "GPU train MB",
    "gpu_infer_mb": "GPU infer MB",
    "gpu_util": "GPU util %",
}
HISTORY_COLUMNS = {
    "epoch": "epoch",
    "step": "step",
    "seconds": "seconds",
    "train_loss": "train loss",
    "val_loss": "val loss",
    "val_dice_mean": "val Dice",
}
TIME_TO_DICE_COLUMNS = {
    "target": "target Dice",
    "reached": "reached",
    "seconds_to_target": "seconds to target",
    "epochs_to_target": "epochs",
    "best_val_dice": "best val Dice",
    "epochs": "epochs run",
    "fit_seconds": "fit wall s",
    "train_slices_per_s": "slices/s (incl. val)",
    "gpu_util": "GPU util %",
}


@dataclass(frozen=True)
class ModelSpec:
    """How to build, feed and time one model."""

    name: str
    family: Family
    build: Callable[[], L.LightningModule]
    batch: Callable[[int], tuple[Tensor, Tensor]]  # (inputs, targets) of n slices, on the CPU


@dataclass(frozen=True)
class Settings:
    device: torch.device
    batch_size: int
    eval_batch_size: int
    steps: int
    warmup: int
    precision: Literal["32", "bf16"]
    channels_last: bool
    compile: bool

    def autocast(self) -> Any:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def _segmenter_batch(n: int, size: int, channels: int = 1) -> tuple[Tensor, Tensor]:
    """Heart-like masks and noisy images of them in every one of the network's ``channels``
    (the slice, its neighbours, its place in the stack: :func:`input_channels`)."""
    label = common.heart_masks(n, size, seed=n)
    image = label.float().unsqueeze(1) / 3 + 0.1 * torch.randn(n, channels, size, size)
    return image, label


def _lgg_batch(n: int, size: int) -> tuple[Tensor, Tensor]:
    label = (common.heart_masks(n, size, seed=n) == 3).to(torch.uint8)
    image = (label.float().unsqueeze(1) + 0.3 * torch.rand(n, 3, size, size)).clamp(0, 1)
    return image, label


def _nvae_batch(n: int, size: int, in_channels: int) -> tuple[Tensor, Tensor]:
    maps = in_channels // 4  # 1 mask, or the 3 masks of a 3-gram
    labels = torch.stack([common.heart_masks(n, size, seed=n + k) for k in range(maps)], dim=1)
    target = onehot(labels[:, maps // 2])
    return (onehot(labels) if maps > 1 else target), target


def _channels(cardiac: CardiacParams, arch: str) -> int:
    train = cardiac.segmenters.train_for(arch)
    return input_channels(train.context_slices, train.slice_position)


def model_specs(cardiac: CardiacParams, brain: BrainParams) -> dict[str, ModelSpec]:
    """Every benchmarked model by name, at the sizes ``cardiac`` and ``brain`` hold."""
    size = cardiac.acdc.prepare.size
    specs: dict[str, ModelSpec] = {
        arch: ModelSpec(
            arch,
            "segmenter",
            lambda arch=arch: new_module(arch, cardiac.segmenters),
            lambda n, arch=arch: _segmenter_batch(n, size, _channels(cardiac, arch)),
        )
        for arch in ARCHS
    }
    nvaes = {
        "nvae-stem4": NvaeParams(stem_channels=4),
        "nvae-stem64": NvaeParams(stem_channels=64),
        "nvae-context": CONTEXT_NVAE,
    }
    for name, nvae in nvaes.items():
        specs[name] = ModelSpec(
            name,
            "nvae",
            lambda nvae=nvae: NvaeModule(nvae, size),
            lambda n, c=nvae.in_channels: _nvae_batch(n, size, c),
        )
    lgg_size = brain.lgg.prepare.size
    archs = brain.architectures
    for arch in archs.names:
        specs[f"lgg-{arch}"] = ModelSpec(
            f"lgg-{arch}",
            "lgg",
            lambda arch=arch: lgg_training.new_module(arch, archs, None),
            lambda n: _lgg_batch(n, lgg_size),
        )
    return specs


def _optimizer(module: L.LightningModule, family: Family) -> torch.optim.Optimizer:
    if family != "nvae":
        return module.optimizer()  # the benchmark times steps; the schedule needs a Trainer
    # NvaeModule.configure_optimizers needs a Trainer (for the cosine schedule's length); the
    # optimiser itself is the same Adamax.
    o = module.params.optim
    return torch.optim.Adamax(
        module.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    )


def _to_device(tensor: Tensor, settings: Settings) -> Tensor:
    tensor = tensor.to(settings.device)
    if settings.channels_last and tensor.is_floating_point() and tensor.ndim == 4:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def _timed(run: Callable[[], object], count: int, device: torch.device) -> float:
    """Seconds for ``count`` calls of ``run``, the queued GPU work included."""
    common.synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        run()
    common.synchronize(device)
    return time.perf_counter() - start


def _train(
    module: L.LightningModule, spec: ModelSpec, settings: Settings
) -> tuple[dict[str, Any], common.Sampler]:
    """Warm-up and timed training steps; the optimiser and batch are freed on return."""
    device = settings.device
    inputs, target = spec.batch(settings.batch_size)
    batch = (_to_device(inputs, settings), _to_device(target, settings))
    optimizer = _optimizer(module, spec.family)

    def step() -> None:
        with settings.autocast():
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    module.train()
    with warnings.catch_warnings(), common.Sampler(device) as sampler:
        # The modules log through self.log, which only warns without a Trainer.
        warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
        warmup = _timed(step, settings.warmup, device)
        timed_from = time.perf_counter()
        seconds = _timed(step, settings.steps, device)
    optimizer.zero_grad(set_to_none=True)
    row = {
        "input": "x".join(str(s) for s in inputs.shape[1:]),
        "warmup_s": warmup,
        "train_slices_per_s": settings.steps * settings.batch_size / seconds,
        "train_ms_per_step": 1000 * seconds / settings.steps,
    }
    if device.type == "cuda":
        row["gpu_train_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["gpu_util"] = sampler.mean_util(timed_from)
    return row, sampler


def _infer(
    module: L.LightningModule, spec: ModelSpec, settings: Settings
) -> tuple[dict[str, Any], common.Sampler]:
    """Warm-up and timed eval-mode forwards under ``no_grad``."""
    device = settings.device
    inputs = _to_device(spec.batch(settings.eval_batch_size)[0], settings)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    module.eval()

    def forward() -> None:
        with torch.no_grad(), settings.autocast():
            if spec.family == "nvae":
                module.model(inputs, sample=False)
            else:
                module(inputs)

    with common.Sampler(device) as sampler:
        _timed(forward, settings.warmup, device)
        seconds = _timed(forward, settings.steps, device)
    row = {"infer_slices_per_s": settings.steps * settings.eval_batch_size / seconds}
    if device.type == "cuda":
        row["gpu_infer_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row, sampler


def measure(spec: ModelSpec, settings: Settings) -> dict[str, Any]:
    """Training and inference throughput, memory and size of one model (one table row)."""
    device = settings.device
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    baseline = common.rss_mb()
    torch.manual_seed(0)
    module = spec.build()
    row: dict[str, Any] = {
        "model": spec.name,
        "family": spec.family,
        "params_count": parameter_count(module),
        "model_mb": round(weights_mb(module), 2),
    }
    module = module.to(device)
    apply_speedups(module, settings.channels_last, settings.compile)  # as training does
    train, train_sampler = _train(module, spec, settings)
    infer, infer_sampler = _infer(module, spec, settings)
    peak = max(train_sampler.peak_rss(), infer_sampler.peak_rss())
    return row | train | infer | {"host_peak_mb": max(0.0, peak - baseline)}


class StopAtDice(Callback):
    """Stops the training at the end of the first validation whose Dice reaches ``target``, or
    at the first training step after ``time_limit`` seconds."""

    def __init__(self, target: float, time_limit: float) -> None:
        self.target = target
        self.time_limit = time_limit
        self._start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if time.perf_counter() - self._start > self.time_limit:
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dice = trainer.callback_metrics.get("val_dice_mean")
        if dice is not None and float(dice) >= self.target:
            trainer.should_stop = True


def time_to_dice(
    cardiac: CardiacParams,
    data: Path,
    target: float,
    settings: Settings,
    batch_size: int | None,
    max_epochs: int | None,
    time_limit: float,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Train the NVAE of ``cardiac.nvae`` on the ground-truth masks of the prepared ``data``
    until the validation Dice reaches ``target``: (summary row, per-epoch rows, settings)."""
    start = time.perf_counter()
    splits = {split: load_split(Path(data) / f"{split}.npz") for split in ("train", "val")}
    tensors = {split: nvae_tensors(slices, "gt") for split, slices in splits.items()}
    load_seconds = time.perf_counter() - start
    device = settings.device
    base = cardiac.nvae.trainer
    trainer = TrainerParams.model_validate(
        {
            **base.model_dump(),
            "accelerator": "gpu" if device.type == "cuda" else "cpu",
            "devices": 1,
            "precision": "bf16-mixed" if settings.precision == "bf16" else "32-true",
            "channels_last": settings.channels_last,
            "compile": settings.compile,
            "limit_train_batches": 1.0,
            "early_stopping_patience": None,
            "batch_size": batch_size or base.batch_size,
            "max_epochs": max_epochs or base.max_epochs,
        }
    )
    model = cardiac.nvae.model
    record = {
        "data": str(data),
        "train_slices": len(splits["train"]),
        "val_slices": len(splits["val"]),
        "load_seconds": round(load_seconds, 2),
        "stem_channels": model.stem_channels,
        "groups_per_scale": ",".join(map(str, model.groups_per_scale)),
        "latent_channels": model.latent_channels,
        "kl_warmup_steps": model.kl_warmup_steps,
        "batch_size": trainer.batch_size,
        "max_epochs": trainer.max_epochs,
        "precision": trainer.precision,
        "channels_last": trainer.channels_last,
        "compile": trainer.compile,
        "time_limit_s": time_limit,
    }
    with tempfile.TemporaryDirectory() as tmp, common.Sampler(device) as sampler:
        fitted = train_nvae_model(
            model,
            trainer,
            tensors,
            Path(tmp),
            callbacks=[StopAtDice(target, time_limit)],
            log_every_n_steps=50,
        )
    history = [
        {key: row.get(key) for key in HISTORY_COLUMNS} | {"epoch": int(row["epoch"]) + 1}
        for row in fitted.history
    ]
    reached = next((row for row in history if row["val_dice_mean"] >= target), None)
    last = history[-1] if history else None
    summary = {
        "target": target,
        "reached": reached is not None,
        "seconds_to_target": reached["seconds"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "best_val_dice": max((row["val_dice_mean"] for row in history), default=None),
        "epochs": len(history),
        "fit_seconds": fitted.fit_seconds,
        "train_slices_per_s": last["step"] * trainer.batch_size / last["seconds"] if last else None,
        "gpu_util": sampler.mean_util(),
    }
    return summary, history, record


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that pick and size the models (shared with bench_data.py)."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--sizes",
        default="quick",
        choices=["quick", "cpu", "full"],
        help="segmenter and brain sizes and inputs: params' top level (quick) or a profile's",
    )
    parser.add_argument(
        "--batch-size", type=int, help="default: 4 on a CPU, 32 on a GPU (time-to-dice: params')"
    )
    parser.add_argument("--steps", type=int, help="timed steps (default: 3 CPU, 20 GPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 1 CPU, 5 GPU)")
    parser.add_argument("--precision", default="32", choices=["32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--brain-params", type=Path, default=Path("pipelines/lgg/params.yaml"))


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve the device-dependent defaults of :func:`add_model_arguments`' options."""
    device = common.resolve_device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or (32 if gpu else 4)
    settings = Settings(
        device=device,
        batch_size=batch,
        eval_batch_size=getattr(args, "eval_batch_size", None) or batch,
        steps=args.steps if args.steps is not None else (20 if gpu else 3),
        warmup=args.warmup if args.warmup is not None else (5 if gpu else 1),
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    if settings.batch_size < 2 or settings.steps < 1 or settings.warmup < 0:
        raise SeglabError("--batch-size must be >= 2 (batch norm), --steps >= 1, --warmup >= 0")
    if gpu:
        torch.set_float32_matmul_precision("high")  # as the training stages do on a GPU
    return settings


def select(specs: dict[str, ModelSpec], names: Sequence[str] | None, gpu: bool) -> list[str]:
    """``names`` (``all``: every model); by default every model but the heavy ones on a CPU."""
    if not names:
        return [n for n in specs if gpu or n not in HEAVY]
    if "all" in names:
        return list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SeglabError(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(specs)})")
    return list(dict.fromkeys(names))


def settings_record(settings: Settings, sizes: str) -> dict[str, Any]:
    return {
        "device": str(settings.device),
        "sizes": sizes,
        "batch_size": settings.batch_size,
        "eval_batch_size": settings.eval_batch_size,
        "steps": settings.steps,
        "warmup": settings.warmup,
        "precision": settings.precision,
        "channels_last": settings.channels_last,
        "compile": settings.compile,
    }


def run_models(
    names: Sequence[str], specs: dict[str, ModelSpec], settings: Settings, progress: bool = True
) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        if progress:
            print(f"... {name}", file=sys.stderr, flush=True)
        rows.append(measure(specs[name], settings))
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", help="names, or all (default: all but heavy)")
    add_model_arguments(parser)
    parser.add_argument("--eval-batch-size", type=int, help="inference batch (default: batch)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--mlflow", action="store_true", help="log to experiment 'benchmarks'")
    parser.add_argument("--time-to-dice", type=float, metavar="D", help="NVAE time-to-Dice mode")
    parser.add_argument("--data", type=Path, default=Path("data/prepared/acdc"))
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds (time-to-dice)")
    parser.add_argument("--max-epochs", type=int, help="time-to-dice (default: params')")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except SeglabError as exc:
        parser.exit(2, f"error: {exc}\n")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_from(args)
    cardiac = common.params_at(args.params, CardiacParams, args.sizes)
    record = settings_record(settings, args.sizes)
    env = common.environment(settings.device)
    if args.time_to_dice is not None:
        summary, history, ttd = time_to_dice(
            cardiac,
            args.data,
            args.time_to_dice,
            settings,
            args.batch_size,
            args.max_epochs,
            args.time_limit,
        )
        name = "nvae_time_to_dice"
        text, payload = common.report(
            name,
            env,
            {"device": record["device"], "sizes": args.sizes, **ttd},
            {
                "time to Dice": ([summary], TIME_TO_DICE_COLUMNS),
                "epochs": (history, HISTORY_COLUMNS),
            },
        )
        metrics = common.row_metrics([{"run": "nvae", **summary}], "run")
    else:
        brain = common.params_at(args.brain_params, BrainParams, args.sizes)
        specs = model_specs(cardiac, brain)
        names = select(specs, args.models, settings.device.type == "cuda")
        rows = run_models(names, specs, settings)
        columns = COLUMNS | (GPU_COLUMNS if settings.device.type == "cuda" else {})
        name = "models"
        text, payload = common.report(name, env, record, {"throughput": (rows, columns)})
        metrics = common.row_metrics(rows, "model")
    print(text)
    if args.json:
        common.save_json(args.json, payload)
    if args.mlflow:
        run_id = common.log_to_mlflow(name, text, payload, metrics, args.params)
        print(f"\nlogged to MLflow experiment '{common.EXPERIMENT}', run {run_id}")
    return payload


if __name__ == "__main__":
    main()
