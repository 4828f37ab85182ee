"""The brain study's model as every trainer builds it: a segmentation-models-pytorch network
(:mod:`seglab.models.lgg`) in the shared
:class:`~seglab.training.segmentation_module.SegmentationModule`, binary (sigmoid) mode, with
the recipe of ``architectures.train`` (the stage and the benchmarks alike)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from seglab.config import LggArchsParams, split_arch_name
from seglab.data.store import SliceSet
from seglab.errors import DataError
from seglab.models.lgg import build_lgg_net
from seglab.training.fit import seed
from seglab.training.segmentation_module import SegmentationModule, recipe_kwargs

#: What checkpoints, early stopping and progress lines watch.
MONITOR = "val_iou"


def image_tensor(slices: SliceSet) -> torch.Tensor:
    """``[N, 3, H, W]`` float32 in [0, 1]: the networks' input (prepared images are uint8)."""
    return torch.from_numpy(slices.image).float().div_(255.0)


def new_module(name: str, params: LggArchsParams, weights: Path | None) -> SegmentationModule:
    """An untrained ``name`` network in the shared module, binary (sigmoid) mode, initialised
    from the training's seed."""
    decoder, encoder = split_arch_name(name)
    seed(params.train.trainer)
    return SegmentationModule(
        build_lgg_net(name, weights_file=weights),
        1,
        **recipe_kwargs(params.train),
        class_names={1: "tumour"},
        monitor=MONITOR,
        hparams={"name": name, "decoder": decoder, "encoder": encoder},
    )


def load_lgg_model(path: Path) -> SegmentationModule:
    """A trained network from a checkpoint written by :func:`train_lgg` (no weights file
    needed: the architecture is read from the checkpoint, the weights are the trained ones)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "LGG model checkpoint not found (run `dvc repro` to train it)")
    try:
        hparams = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
        name = hparams["name"]
        return SegmentationModule.load_from_checkpoint(
            path,
            net=build_lgg_net(name),
            map_location="cpu",
            hparams={k: hparams[k] for k in ("name", "decoder", "encoder")},
        )
    except (OSError, RuntimeError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable LGG model checkpoint ({exc})") from exc
