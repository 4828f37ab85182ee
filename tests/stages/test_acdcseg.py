"""ACDCSeg and the 3-gram dataset: rows consistent with the prepared splits, triplets that never
mix patients, frames or segmenters, EOS exactly at the ends of each volume."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from seglab.config import (
    AcdcDataParams,
    AcdcSegParams,
    CardiacParams,
    ResUNetParams,
    SegmenterNetsParams,
    SegmentersParams,
    SegmenterTrainParams,
    TrainerParams,
    UNetParams,
)
from seglab.data.acdcseg import (
    VOLUME_KEYS,
    acdcseg_rows,
    load_trigram,
    onehot,
    trigram_context,
    trigram_rows,
)
from seglab.data.store import META_DTYPES, SliceSet, concat, load_split, save_split
from seglab.errors import DataError
from seglab.inference.segment import image_tensor, load_segmenter
from seglab.stages.acdcseg import build_acdcseg, build_trigram
from seglab.stages.segmenters import _save_crossfit
from seglab.training.datamodule import TensorDataModule
from seglab.training.segmenters import new_module

SIZE = 16


def _prepared(volumes: dict[str, list[int]], seed: int = 0) -> SliceSet:
    """Slices of ``{patient: [slices of ED, slices of ES]}``, in the prepared order."""
    rng = np.random.default_rng(seed)
    rows = []
    for patient, counts in volumes.items():
        for phase, frame, count in zip(("ED", "ES"), (1, 12), counts, strict=True):
            rows += [
                {
                    "patient": patient,
                    "group": "NOR",
                    "phase": phase,
                    "frame": frame,
                    "slice_index": z,
                    "slice_count": count,
                    "spacing_x": 1.5625,
                    "spacing_y": 1.5625,
                    "thickness": 10.0,
                }
                for z in range(count)
            ]
    meta = pd.DataFrame(rows, columns=list(META_DTYPES)).astype(META_DTYPES)
    n = len(meta)
    label = rng.integers(0, 4, (n, SIZE, SIZE)).astype(np.uint8)
    image = rng.random((n, SIZE, SIZE)).astype(np.float32)
    return SliceSet(image=image, label=label, meta=meta)


def _encoded(n: int) -> np.ndarray:
    """Predicted maps that name their row: base-4 digits of the row number in the first pixels."""
    pred = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        for d in range(6):
            pred[i, 0, d] = (i // 4**d) % 4
        pred[i, 1:, :] = 1 + i % 3  # never all background
    return pred


def _decode(maps: np.ndarray) -> np.ndarray:
    return sum(maps[..., 0, d].astype(np.int64) * 4**d for d in range(6))


def _acdcseg(volumes: dict[str, list[int]], archs: tuple[str, ...] = ("a", "b")) -> SliceSet:
    prepared = _prepared(volumes)
    parts = []
    for k, arch in enumerate(archs):
        pred = _encoded(len(prepared) * len(archs))[k * len(prepared) : (k + 1) * len(prepared)]
        parts.append(acdcseg_rows(prepared, pred, arch))
    return concat(parts)


def test_triplets_stay_in_their_volume_and_eos_sits_at_the_ends() -> None:
    rows = _acdcseg({"p1": [4, 3], "p2": [1, 5]})
    shuffled_order = np.random.default_rng(0).permutation(len(rows))
    shuffled = SliceSet(
        image=rows.image[shuffled_order],
        label=rows.label[shuffled_order],
        meta=rows.meta.iloc[shuffled_order].reset_index(drop=True),
        extra={"pred": rows.extra["pred"][shuffled_order]},
    )
    context = trigram_context(shuffled)
    meta = shuffled.meta
    ids = _decode(shuffled.extra["pred"])  # row id of each predicted map
    by_id = dict(zip(ids, range(len(meta)), strict=True))
    first = meta["slice_index"] == 0
    last = meta["slice_index"] == meta["slice_count"] - 1
    assert (context[first.to_numpy(), 0] == 0).all()  # EOS before the first slice
    assert (context[last.to_numpy(), 2] == 0).all()  # EOS after the last one
    assert np.array_equal(context[:, 1], shuffled.extra["pred"])
    for i in range(len(meta)):
        for channel, offset, at_end in ((0, -1, first[i]), (2, 1, last[i])):
            if at_end:
                continue
            assert context[i, channel].any(), "a real neighbour is never all background here"
            j = by_id[_decode(context[i, channel][None])[0]]
            for key in VOLUME_KEYS:
                assert meta.loc[j, key] == meta.loc[i, key], (key, i, j)
            assert meta.loc[j, "slice_index"] == meta.loc[i, "slice_index"] + offset
    single = (meta["slice_count"] == 1).to_numpy()
    assert single.sum() == 2 and (context[single][:, [0, 2]] == 0).all()


def test_an_incomplete_or_duplicated_volume_is_refused() -> None:
    rows = _acdcseg({"p1": [4, 3]}, archs=("a",))
    keep = ~((rows.meta["phase"] == "ED") & (rows.meta["slice_index"] == 2)).to_numpy()
    gap = rows.take(keep)
    with pytest.raises(DataError, match="x.npz: volume has no slice"):
        trigram_context(gap, "x.npz")
    twice = concat([rows, rows])
    with pytest.raises(DataError, match="slice given twice"):
        trigram_context(twice, "x.npz")


def test_onehot_gives_twelve_channels_grouped_by_slice() -> None:
    context = torch.randint(0, 4, (5, 3, 8, 8), dtype=torch.uint8)
    hot = onehot(context)
    assert hot.shape == (5, 12, 8, 8) and hot.dtype == torch.float32
    for k in range(3):
        assert torch.equal(hot[:, 4 * k : 4 * k + 4].argmax(dim=1), context[:, k].long())
    assert torch.equal(hot.sum(dim=1), torch.full((5, 8, 8), 3.0))
    target = onehot(context[:, 0])
    assert target.shape == (5, 4, 8, 8)
    eos = onehot(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert eos[0, [0, 4, 8]].eq(1).all() and eos.sum() == 12  # all background


def test_load_trigram_round_trip(tmp_path: Path) -> None:
    grams = trigram_rows(_acdcseg({"p1": [3, 2]}))
    save_split(tmp_path / "train.npz", grams)
    inputs, target, meta = load_trigram(tmp_path / "train.npz")
    assert inputs.shape == (len(grams), 12, SIZE, SIZE) and target.shape == (
        len(grams),
        4,
        SIZE,
        SIZE,
    )
    assert torch.equal(target.argmax(dim=1), torch.from_numpy(grams.label).long())
    assert list(meta["segmenter"].unique()) == ["a", "b"]
    raw, labels, _ = load_trigram(tmp_path / "train.npz", as_onehot=False)
    assert raw.dtype == torch.uint8 and raw.shape == (len(grams), 3, SIZE, SIZE)
    assert torch.equal(labels, torch.from_numpy(grams.label))
    save_split(tmp_path / "plain.npz", _prepared({"p1": [1, 1]}))
    with pytest.raises(DataError, match="plain.npz: not a 3-gram split"):
        load_trigram(tmp_path / "plain.npz")


# --- the stages on a small synthetic project --------------------------------------------------

NETS = SegmenterNetsParams(unet=UNetParams(channels=(4, 8)), resunet=ResUNetParams(channels=(4, 8)))
SPLIT_PATIENTS = {"train": ["p1", "p2", "p3"], "val": ["p4"], "test": ["p5", "p6"]}


def _params(folds: int) -> CardiacParams:
    return CardiacParams(
        acdc=AcdcDataParams(prepared="prepared"),
        segmenters=SegmentersParams(
            archs=("unet", "resunet"),
            models="models",
            metrics="metrics",
            nets=NETS,
            train=SegmenterTrainParams(trainer=TrainerParams(accelerator="cpu", batch_size=4)),
        ),
        acdcseg=AcdcSegParams(folds=folds, out="acdcseg", trigram="acdc3gram"),
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared splits and two briefly trained checkpoints, as the segmenter stage leaves them."""
    root = tmp_path_factory.mktemp("acdcseg")
    counts = {"p1": [3, 2], "p2": [4, 4], "p3": [1, 2], "p4": [3, 3], "p5": [2, 3], "p6": [3, 1]}
    for k, (split, ids) in enumerate(SPLIT_PATIENTS.items()):
        save_split(root / "prepared" / f"{split}.npz", _prepared({p: counts[p] for p in ids}, k))
    seg = _params(2).segmenters
    train = load_split(root / "prepared" / "train.npz")
    tensors = (image_tensor(train), torch.from_numpy(train.label))
    data = TensorDataModule({"train": tensors, "val": tensors}, batch_size=4)
    for arch in seg.archs:
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1,
            logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(new_module(arch, seg), datamodule=data)
        path = seg.checkpoint_path(arch, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(path)
    return root


def _write_crossfit(root: Path, params: CardiacParams) -> dict[str, np.ndarray]:
    train = load_split(root / "prepared" / "train.npz")
    preds = {}
    for k, arch in enumerate(params.segmenters.archs):
        pred = np.random.default_rng(k).integers(0, 4, train.label.shape).astype(np.uint8)
        fold = (train.meta["patient"] != "p1").to_numpy().astype(np.int16)
        crossfit = (pred, fold, {"method": "crossfit-2"}) if params.acdcseg.folds > 1 else None
        _save_crossfit(params.segmenters, arch, root, train, crossfit, params.acdcseg.folds)
        preds[arch] = pred
    return preds


def _direct(root: Path, arch: str, slices: SliceSet) -> np.ndarray:
    module = load_segmenter(root / "models" / f"{arch}.ckpt").eval()
    with torch.no_grad():
        return module(image_tensor(slices)).argmax(dim=1).numpy().astype(np.uint8)


def test_acdcseg_rows_follow_the_prepared_splits(project: Path) -> None:
    params = _params(folds=2)
    crossfit = _write_crossfit(project, params)
    summary = build_acdcseg(params, root=project)
    assert "train predictions: crossfit-2" in summary
    meta_json = json.loads((project / "acdcseg" / "meta.json").read_text())
    assert meta_json["train_predictions"] == {"unet": "crossfit-2", "resunet": "crossfit-2"}
    seen: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        prepared = load_split(project / "prepared" / f"{split}.npz")
        rows = load_split(project / "acdcseg" / f"{split}.npz")
        assert len(rows) == 2 * len(prepared) == meta_json["rows"][split]
        seen[split] = set(rows.meta["patient"])
        assert seen[split] == set(SPLIT_PATIENTS[split])
        for arch in ("unet", "resunet"):
            mine = (rows.meta["segmenter"] == arch).to_numpy()
            part = rows.meta[mine].reset_index(drop=True)
            for column in ("patient", "frame", "slice_index", "slice_count", "phase"):
                assert part[column].tolist() == prepared.meta[column].tolist(), column
            assert np.array_equal(rows.label[mine], prepared.label)
            assert np.array_equal(rows.image[mine], prepared.image)
            if split == "train":  # out-of-fold predictions, never the final model's
                assert np.array_equal(rows.extra["pred"][mine], crossfit[arch])
                assert set(part["fold"]) == {0, 1}
            else:
                assert np.array_equal(rows.extra["pred"][mine], _direct(project, arch, prepared))
                assert set(part["fold"]) == {-1}
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"])

    trigram = build_trigram(params, root=project)
    assert "3-gram" in trigram
    for split in ("train", "val", "test"):
        rows = load_split(project / "acdcseg" / f"{split}.npz")
        grams = load_split(project / "acdc3gram" / f"{split}.npz")
        assert np.array_equal(grams.extra["context"][:, 1], rows.extra["pred"])
        assert np.array_equal(grams.label, rows.label)
        first = (grams.meta["slice_index"] == 0).to_numpy()
        assert (grams.extra["context"][first, 0] == 0).all()


def test_in_sample_mode_is_flagged_and_uses_the_final_models(project: Path) -> None:
    params = _params(folds=1)
    _write_crossfit(project, params)
    assert "train predictions: insample" in build_acdcseg(params, root=project)
    meta_json = json.loads((project / "acdcseg" / "meta.json").read_text())
    assert set(meta_json["train_predictions"].values()) == {"insample"}
    prepared = load_split(project / "prepared" / "train.npz")
    rows = load_split(project / "acdcseg" / "train.npz")
    mine = (rows.meta["segmenter"] == "unet").to_numpy()
    assert np.array_equal(rows.extra["pred"][mine], _direct(project, "unet", prepared))


def test_stale_cross_predictions_are_refused(project: Path) -> None:
    params = _params(folds=2)
    _write_crossfit(project, params)
    train = load_split(project / "prepared" / "train.npz")
    save_split(project / "prepared" / "train.npz", _prepared({"p1": [3, 2], "p2": [4, 4]}))
    try:
        with pytest.raises(DataError, match="unet.crossfit.npz: does not match the prepared"):
            build_acdcseg(params, root=project)
    finally:
        save_split(project / "prepared" / "train.npz", train)


def test_onehot_of_read_only_labels_copies_without_a_warning() -> None:
    labels = np.array([[[0, 1], [2, 3]]], dtype=np.uint8)
    labels.flags.writeable = False  # as a broadcast view or a shared array comes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hot = onehot(labels)
    assert hot.shape == (1, 4, 2, 2) and hot.dtype == torch.float32
    assert torch.equal(hot.argmax(1), torch.from_numpy(labels.astype(np.int64)))
    stacked = onehot(np.broadcast_to(labels[:, None], (1, 3, 2, 2)), torch.float16)
    assert stacked.shape == (1, 12, 2, 2) and stacked.dtype == torch.float16
