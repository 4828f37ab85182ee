"""Segment prepared slices with a trained segmenter: load its checkpoint, build its input (the
slice, or the slice between its neighbours for a 2.5D model) and predict label maps, cleaned up
as chosen after its training: from the softmax averaged over four flips or not, then cleaned up
(:mod:`seglab.inference.postprocess`).

What a checkpoint needs at inference lives in its hyper-parameters (architecture and sizes,
``context_slices``, ``flips`` and the clean-up), so predicting never reads params.yaml.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seglab.config import SegmenterNetsParams, TrackingParams, TrainerParams
from seglab.data.store import SliceSet, image_context, input_channels, volume_rows
from seglab.errors import DataError
from seglab.inference.postprocess import Cleanup
from seglab.models.segmenters import build_segmenter
from seglab.training.fit import inference_batch, predict
from seglab.training.segmentation_module import SegmentationModule, flip_averaged_softmax


def image_tensor(slices: SliceSet, context: int = 0, position: bool = False) -> torch.Tensor:
    """``[N, 1 + 2 * context (+ 1), H, W]`` float32: the networks' input, each slice between
    its ``context`` neighbours on either side, then its place in the stack if ``position``
    (:func:`~seglab.data.store.image_context`)."""
    return torch.from_numpy(image_context(slices, context, position))


#: Hyper-parameters the training stage keeps in a segmenter's checkpoint beside the module's own.
STAGE_HPARAMS = ("arch", "net_params", "context_slices", "slice_position", "flips", *Cleanup.KEYS)


def context_of(module: SegmentationModule) -> int:
    """The neighbouring slices on either side that ``module`` takes as input (0 before 2.5D)."""
    return int(module.hparams.get("context_slices", 0))


def position_of(module: SegmentationModule) -> bool:
    """Whether ``module`` takes the slice's place in its stack as its last input channel."""
    return bool(module.hparams.get("slice_position", False))


def module_input(module: SegmentationModule, slices: SliceSet) -> torch.Tensor:
    """``module``'s input for ``slices``: the slice, its neighbours and its place as trained."""
    return image_tensor(slices, context_of(module), position_of(module))


def flips_of(module: SegmentationModule) -> bool:
    """Whether ``module`` predicts from the softmax averaged over four flips (chosen on
    validation after its training; off before the choice existed)."""
    return bool(module.hparams.get("flips", False))


def cleanup_of(module: SegmentationModule) -> Cleanup:
    """The clean-up chosen for ``module``'s predictions after its training (none before)."""
    return Cleanup.from_hparams(module.hparams)


def load_segmenter(path: Path) -> SegmentationModule:
    """A trained segmenter from a checkpoint written by the training stage
    (:func:`seglab.stages.segmenters.train_segmenter`).

    The architecture and its sizes are read from the checkpoint, not from the current params.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "segmenter checkpoint not found (run `dvc repro` to train it)")
    try:
        hparams = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
        arch = hparams["arch"]
        nets = SegmenterNetsParams.model_validate({arch: hparams["net_params"]})
        channels = input_channels(
            int(hparams.get("context_slices", 0)), bool(hparams.get("slice_position", False))
        )
        return SegmentationModule.load_from_checkpoint(
            path,
            net=build_segmenter(arch, nets, in_channels=channels),
            map_location="cpu",
            # What the stage stored beside the module's own settings; older checkpoints lack
            # the later keys, and context_of / flips_of / cleanup_of supply their defaults.
            hparams={key: hparams[key] for key in STAGE_HPARAMS if key in hparams},
        )
    except (OSError, RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(path, f"not a readable segmenter checkpoint ({exc})") from exc


def predict_labels(
    module: SegmentationModule, slices: SliceSet, trainer: TrainerParams, *, raw: bool = False
) -> np.ndarray:
    """uint8 [N, H, W] predicted label maps of every slice: the argmax of the logits (of the
    softmax averaged over four flips when chosen, :func:`flips_of`), cleaned up as chosen after
    training (:func:`cleanup_of`) unless ``raw``."""
    if len(slices) == 0:
        return np.zeros(slices.label.shape, dtype=np.uint8)
    batch = inference_batch(trainer)
    images = module_input(module, slices)
    pred = predict(module, images, trainer, batch).numpy().astype(np.uint8)
    return pred if raw else cleanup_of(module).apply(pred, volume_rows(slices.meta))


#: The training run's tag that says whether a registered segmenter averages over flips.
FLIPS_TAG = "predict_flips"
#: Registered segmenters are named ``<SEGMENTER_PREFIX><arch>``.
SEGMENTER_PREFIX = "acdc-segmenter-"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


@dataclass(frozen=True)
class Segmenter:
    """A trained segmenter however it was stored (a checkpoint, or a registered network loaded
    from MLflow), with what predicting needs: its input context and its clean-up.

    ``name`` says what was loaded; ``version`` and ``run_id`` trace a registered one."""

    net: torch.nn.Module  # [B, 1 + 2 * context (+ 1), S, S] images -> [B, 4, S, S] logits
    context: int
    cleanup: Cleanup
    name: str
    version: str | None = None
    run_id: str | None = None
    flips: bool = False  # the softmax averaged over the four flips of each slice
    position: bool = False  # the slice's place in its stack as the last input channel

    def __call__(self, slices: SliceSet, batch_size: int = 8) -> np.ndarray:
        """uint8 ``[N, S, S]`` label maps of ``slices`` (on the CPU), cleaned up."""
        images = image_tensor(slices, self.context, self.position)
        with torch.no_grad():
            parts = [
                self._scores(images[i : i + batch_size]).argmax(1).to(torch.uint8)
                for i in range(0, len(images), batch_size)
            ]
        pred = torch.cat(parts).numpy() if parts else np.zeros(slices.label.shape, np.uint8)
        return self.cleanup.apply(pred, volume_rows(slices.meta))

    def _scores(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class scores whose argmax is the label: logits, or the flip-averaged softmax."""
        return flip_averaged_softmax(self.net, images) if self.flips else self.net(images)


def open_segmenter(ref: str, tracking: TrackingParams, root: Path) -> Segmenter:
    """The segmenter behind ``ref``: a checkpoint path (``models/segmenters/attunet.ckpt``), a
    registry URI (``models:/acdc-segmenter-attunet@champion``), or ``best``: the champion of the
    four with the best test Dice in the registry."""
    # The registry only when asked: predicting from a checkpoint needs no MLflow (a GPU run).
    from seglab.tracking.models import input_shape
    from seglab.tracking.registry import (
        best_champion,
        load_model,
        resolve_version,
        version_run_tags,
    )

    if ref == "best":
        ref = best_champion(SEGMENTER_PREFIX, tracking, root)
    if not _URI.match(ref):
        module = load_segmenter(Path(ref)).eval()
        return Segmenter(
            module.net,
            context_of(module),
            cleanup_of(module),
            name=ref,
            flips=flips_of(module),
            position=position_of(module),
        )
    net = load_model(ref, tracking, root, map_location="cpu")
    version = resolve_version(ref, tracking, root) if ref.startswith("models:/") else None
    run_id = version.run_id if version is not None else None
    tags = version_run_tags(version, tracking, root) if version is not None else {}
    channels, _ = input_shape(ref)
    return Segmenter(
        net,
        context=(channels - 1) // 2,
        position=channels % 2 == 0,  # an even channel count: the place is the last channel
        cleanup=Cleanup.from_tags(tags),
        flips=tags.get(FLIPS_TAG, "False") == "True",
        name=f"{ref} (version {version.version})" if version is not None else ref,
        version=str(version.version) if version is not None else None,
        run_id=run_id,
    )
