"""Data pipeline throughput alone: slices per second delivered to the model by the training
stages' loaders, beside the models' own training throughput, so that a data-bound run shows.

    uv run --frozen python benchmarks/bench_data.py                        # data/prepared/acdc
    uv run --frozen python benchmarks/bench_data.py --data data/prepared/lgg
    uv run --frozen python benchmarks/bench_data.py --device cuda --batch-size 32 --json data.json

First the cost of loading each split of the prepared folder (``load_split``: seconds, file and
in-memory MB). Then, over ``--epochs`` epochs of the train split (after 2 untimed batches),
what each pipeline delivers on ``--device``:

- ``segmenter``: the stages' ``TensorDataModule`` train loader (shuffled, per-item indexing and
  collation), batches moved to the device, then the batched on-device augmentation of the
  params (``segmenters.train.augment``; the brain params' for an LGG folder) when enabled;
- ``nvae`` (ACDC folders): the loader over the one-hot tensors the NVAE stage builds once
  (``nvae_tensors``), and the alternative of label maps one-hot encoded per batch on the device;
- ``resident`` rows: the split moved to the device once and batched by index, the ceiling a
  loader could reach.

"prepare s" is the one-off cost of building a pipeline's tensors (and moving them to the
device); "MB" what they hold. Each pipeline is set beside a model's training throughput measured
as ``bench_models.py`` does at the same batch size (``--models``; default ``unet`` and
``nvae-stem4``, or ``lgg-unet-resnet18`` for an LGG folder). The loaders run in the training
process (no workers), so data and compute add up: "data share" is the data's part of a step's
time, and a pipeline slower than its model is the bottleneck ("bound: data").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_models
import common
import torch
from torch import Tensor

from seglab.config import AugmentParams, BrainParams, CardiacParams
from seglab.data.acdcseg import nvae_tensors, onehot
from seglab.data.splits import SPLITS
from seglab.data.store import SliceSet, load_split
from seglab.errors import DataError, SeglabError
from seglab.inference.segment import image_tensor
from seglab.training import lgg as lgg_training
from seglab.training.augment import BatchAugment
from seglab.training.datamodule import TensorDataModule

WARMUP_BATCHES = 2
LOAD_COLUMNS = {
    "split": "split",
    "slices": "slices",
    "file_mb": "file MB",
    "load_s": "load s",
    "memory_mb": "in memory MB",
}
PIPELINE_COLUMNS = {
    "pipeline": "pipeline",
    "slices_per_s": "slices/s",
    "ms_per_batch": "ms/batch",
    "prepare_s": "prepare s",
    "tensors_mb": "MB",
    "model": "model",
    "model_slices_per_s": "model train slices/s",
    "data_share": "data share %",
    "bound": "bound",
}
MODEL_COLUMNS = {
    key: bench_models.COLUMNS[key]
    for key in ("model", "input", "train_slices_per_s", "train_ms_per_step")
}

Batch = tuple[Tensor, ...]


@dataclass(frozen=True)
class Pipeline:
    """Tensors built once from the split, batched by the loader (or by index on the device),
    then transformed per batch on the device."""

    name: str
    key: str  # the name in MLflow metric keys (which take no colons, brackets or arrows)
    family: str  # the model family it feeds: segmenter, lgg or nvae
    tensors: Callable[[], Batch]
    transform: Callable[[Batch], Batch]
    resident: bool = False


def load_splits(folder: Path) -> tuple[dict[str, SliceSet], list[dict[str, Any]]]:
    """Every split of a prepared folder, with what loading each cost."""
    splits, rows = {}, []
    for split in SPLITS:
        path = Path(folder) / f"{split}.npz"
        start = time.perf_counter()
        slices = load_split(path)
        seconds = time.perf_counter() - start
        arrays = [slices.image, slices.label, *slices.extra.values()]
        splits[split] = slices
        rows.append(
            {
                "split": split,
                "slices": len(slices),
                "file_mb": path.stat().st_size / 2**20,
                "load_s": seconds,
                "memory_mb": sum(a.nbytes for a in arrays) / 2**20,
            }
        )
    if len(splits["train"]) == 0:
        raise DataError(Path(folder) / "train.npz", "the train split has no slices")
    return splits, rows


def pipelines(train: SliceSet, augment: AugmentParams) -> list[Pipeline]:
    """The pipelines of a prepared train split: LGG (3-channel uint8 images) or ACDC."""
    lgg = train.image.ndim == 4
    family = "lgg" if lgg else "segmenter"

    def segmenter_tensors() -> Batch:
        image = lgg_training.image_tensor(train) if lgg else image_tensor(train)
        return image, torch.from_numpy(train.label)

    def identity(batch: Batch) -> Batch:
        return batch

    out = [
        Pipeline(
            f"{family}: loader -> device", f"{family}-loader", family, segmenter_tensors, identity
        )
    ]
    if augment.enabled:
        augmenter = BatchAugment(augment)

        def augmented(batch: Batch) -> Batch:
            return augmenter(batch[0], batch[1])

        out += [
            Pipeline(
                f"{family}: loader -> device + augment",
                f"{family}-loader-augment",
                family,
                segmenter_tensors,
                augmented,
            ),
            Pipeline(
                f"{family}: resident + augment",
                f"{family}-resident-augment",
                family,
                segmenter_tensors,
                augmented,
                resident=True,
            ),
        ]
    else:
        out.append(
            Pipeline(
                f"{family}: resident",
                f"{family}-resident",
                family,
                segmenter_tensors,
                identity,
                resident=True,
            )
        )
    if lgg:
        return out

    def labels() -> Batch:
        return (torch.from_numpy(train.label),)

    def encode(batch: Batch) -> Batch:
        hot = onehot(batch[0])
        return hot, hot

    return out + [
        Pipeline(
            "nvae: loader (one-hot, as the stage) -> device",
            "nvae-loader-onehot",
            "nvae",
            lambda: nvae_tensors(train, "gt"),
            identity,
        ),
        Pipeline(
            "nvae: loader (labels) -> device + one-hot",
            "nvae-loader-labels-onehot",
            "nvae",
            labels,
            encode,
        ),
        Pipeline(
            "nvae: resident labels + one-hot",
            "nvae-resident-labels-onehot",
            "nvae",
            labels,
            encode,
            resident=True,
        ),
    ]


def _megabytes(tensors: Batch) -> float:
    """What the tensors hold, each storage once (the NVAE's inputs and targets are one)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()) / 2**20


def _batches(
    tensors: Batch, pipeline: Pipeline, batch_size: int, device: torch.device
) -> Iterator[Batch]:
    """One epoch of batches on ``device``, shuffled, before the per-batch transform."""
    if pipeline.resident:
        order = torch.randperm(len(tensors[0]), device=device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield tuple(t[index] for t in tensors)
        return
    loader = TensorDataModule({"train": tensors}, batch_size=batch_size).train_dataloader()
    for batch in loader:
        yield tuple(t.to(device) for t in batch)


def measure(
    pipeline: Pipeline, batch_size: int, device: torch.device, epochs: int
) -> dict[str, Any]:
    """Slices per second one pipeline delivers, transformed, on ``device``."""
    common.synchronize(device)
    start = time.perf_counter()
    tensors = pipeline.tensors()
    if pipeline.resident:
        tensors = tuple(t.to(device) for t in tensors)
    common.synchronize(device)
    prepare = time.perf_counter() - start

    def run(limit: int | None = None) -> tuple[int, int]:
        slices = count = 0
        for batch in _batches(tensors, pipeline, batch_size, device):
            slices += len(pipeline.transform(batch)[0])
            count += 1
            if count == limit:
                break
        return slices, count

    run(WARMUP_BATCHES)
    common.synchronize(device)
    start = time.perf_counter()
    slices = batches = 0
    for _ in range(epochs):
        done = run()
        slices, batches = slices + done[0], batches + done[1]
    common.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "pipeline": pipeline.name,
        "key": pipeline.key,
        "family": pipeline.family,
        "slices": slices,
        "slices_per_s": slices / seconds,
        "ms_per_batch": 1000 * seconds / batches,
        "prepare_s": prepare,
        "tensors_mb": _megabytes(tensors),
    }


def compare(rows: list[dict[str, Any]], models: Sequence[dict[str, Any]]) -> None:
    """Set each pipeline beside the first measured model of the family it feeds."""
    for row in rows:
        model = next((m for m in models if m["family"] == row["family"]), None)
        if model is None:
            continue
        data, compute = 1 / row["slices_per_s"], 1 / model["train_slices_per_s"]
        row |= {
            "model": model["model"],
            "model_slices_per_s": model["train_slices_per_s"],
            "data_share": 100 * data / (data + compute),
            "bound": "data" if data > compute else "model",
        }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/prepared/acdc"))
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs of the train split")
    parser.add_argument(
        "--models", nargs="*", help="compared models (none: skip; default: by folder)"
    )
    bench_models.add_model_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--mlflow", action="store_true", help="log to experiment 'benchmarks'")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except SeglabError as exc:
        parser.exit(2, f"error: {exc}\n")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.epochs < 1:
        raise SeglabError("--epochs must be >= 1")
    settings = bench_models.settings_from(args)
    device = settings.device
    splits, load_rows = load_splits(args.data)
    train = splits["train"]
    lgg = train.image.ndim == 4
    cardiac = common.params_at(args.params, CardiacParams, args.sizes)
    brain = common.params_at(args.brain_params, BrainParams, args.sizes)
    augment = brain.architectures.train.augment if lgg else cardiac.segmenters.train.augment
    rows = []
    for pipeline in pipelines(train, augment):
        print(f"... {pipeline.name}", file=sys.stderr, flush=True)
        rows.append(measure(pipeline, settings.batch_size, device, args.epochs))
    names = args.models
    if names is None:
        names = ["lgg-unet-resnet18"] if lgg else ["unet", "nvae-stem4"]
    specs = bench_models.model_specs(cardiac, brain)
    selected = bench_models.select(specs, names, True) if names else []
    models = bench_models.run_models(selected, specs, settings)
    compare(rows, models)
    record = {
        "data": str(args.data),
        "train_slices": len(train),
        "epochs": args.epochs,
        "augment": augment.enabled,
        **bench_models.settings_record(settings, args.sizes),
    }
    text, payload = common.report(
        "data",
        common.environment(device),
        record,
        {
            "loading": (load_rows, LOAD_COLUMNS),
            "pipelines": (rows, PIPELINE_COLUMNS),
            "models": (models, MODEL_COLUMNS),
        },
    )
    print(text)
    if args.json:
        common.save_json(args.json, payload)
    if args.mlflow:
        metrics = common.row_metrics(rows, "key") | common.row_metrics(load_rows, "split")
        run_id = common.log_to_mlflow("data", text, payload, metrics, args.params)
        print(f"\nlogged to MLflow experiment '{common.EXPERIMENT}', run {run_id}")
    return payload


if __name__ == "__main__":
    main()
