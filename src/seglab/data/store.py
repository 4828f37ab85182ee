"""The prepared-slice format: one uncompressed ``.npz`` per split, loaded whole into memory.

ACDC at 128x128 is ~2,000 slices per split (~130 MB of float32): one file read per split beats
per-slice files, and the arrays go straight to tensors without per-item I/O in the training
loop. Metadata travels as columns in the same file, so a split is self-describing.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from seglab.errors import DataError
from seglab.io import atomic_file

#: Per-slice metadata columns and their stored dtypes.
META_DTYPES: dict[str, type] = {
    "patient": str,
    "group": str,
    "phase": str,  # "ED" or "ES"
    "frame": np.int16,  # 1-based cine frame number
    "slice_index": np.int16,  # 0 = first slice of the volume (base side in ACDC)
    "slice_count": np.int16,
    "spacing_x": np.float32,  # mm per pixel after resampling
    "spacing_y": np.float32,
    "thickness": np.float32,  # slice spacing in mm
}


@dataclass
class SliceSet:
    """Slices of one split: images, label maps, and one metadata row per slice.

    ``extra`` holds further per-slice arrays (e.g. a segmenter's predictions in ACDCSeg).
    """

    image: np.ndarray  # float32 [N, H, W] (or [N, C, H, W])
    label: np.ndarray  # uint8 [N, H, W]
    meta: pd.DataFrame
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.meta)
        for name, arr in {"image": self.image, "label": self.label, **self.extra}.items():
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} slices, metadata has {n}")

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def spacing(self) -> np.ndarray:
        """[N, 2] in-plane pixel spacing in mm."""
        return self.meta[["spacing_x", "spacing_y"]].to_numpy(dtype=np.float32)

    def take(self, rows: np.ndarray) -> SliceSet:
        """The slices at ``rows`` (a boolean mask or positions), every array and column alike.

        >>> half = slices.take(slices.meta["phase"].to_numpy() == "ED")
        """
        return SliceSet(
            image=self.image[rows],
            label=self.label[rows],
            meta=self.meta.iloc[rows].reset_index(drop=True),
            extra={name: arr[rows] for name, arr in self.extra.items()},
        )


def concat(sets: Sequence[SliceSet]) -> SliceSet:
    """The slices of ``sets`` one after another (e.g. train and val as one pool of patients,
    or every segmenter's ACDCSeg rows); all must hold the same ``extra`` arrays.

    >>> pool = concat([splits["train"], splits["val"]])
    """
    if not sets:
        raise ValueError("nothing to concatenate")
    names = [sorted(s.extra) for s in sets]
    if any(n != names[0] for n in names):
        raise ValueError(f"the slice sets hold different extra arrays: {names}")
    return SliceSet(
        image=np.concatenate([s.image for s in sets]),
        label=np.concatenate([s.label for s in sets]),
        meta=pd.concat([s.meta for s in sets], ignore_index=True),
        extra={name: np.concatenate([s.extra[name] for s in sets]) for name in names[0]},
    )


#: The rows of one 3D volume of a prepared split: neighbours never cross them.
VOLUME_KEYS = ("patient", "frame")


def neighbour_rows(
    meta: pd.DataFrame,
    volume_keys: tuple[str, ...] = VOLUME_KEYS,
    offset: int = 1,
    path: Path | str = "<slices>",
) -> np.ndarray:
    """int64 [N]: the row of the slice ``offset`` places away in each row's volume, -1 beyond
    the volume's first or last slice.

    ``path`` names the source in errors: a volume with a slice index missing inside its range,
    or a slice given twice, would silently shift the neighbours, so it is refused.
    """
    meta = meta.reset_index(drop=True)
    keys = [*volume_keys, "slice_index"]
    index = pd.Series(np.arange(len(meta)), index=pd.MultiIndex.from_frame(meta[keys]))
    if index.index.has_duplicates:
        dup = meta[index.index.duplicated(keep=False)].iloc[0]
        raise DataError(path, f"slice given twice: {dict(dup[keys])}")
    neighbour = meta["slice_index"].to_numpy() + offset
    inside = (neighbour >= 0) & (neighbour < meta["slice_count"].to_numpy())
    rows = np.full(len(meta), -1, dtype=np.int64)
    wanted = meta.loc[inside, list(volume_keys)].assign(slice_index=neighbour[inside])
    found = index.reindex(pd.MultiIndex.from_frame(wanted[keys])).to_numpy()
    if np.isnan(found).any():
        missing = wanted.iloc[int(np.flatnonzero(np.isnan(found))[0])]
        raise DataError(path, f"volume has no slice {dict(missing[keys])}")
    rows[inside] = found.astype(np.int64)
    return rows


def volume_rows(meta: pd.DataFrame, volume_keys: tuple[str, ...] = VOLUME_KEYS) -> list[np.ndarray]:
    """The rows of each 3D volume, in slice order: what a step across slices iterates over.

    >>> meta = pd.DataFrame({"patient": ["p", "p", "q"], "frame": [1, 1, 1],
    ...                      "slice_index": [1, 0, 0]})
    >>> [rows.tolist() for rows in volume_rows(meta)]
    [[1, 0], [2]]
    """
    meta = meta.reset_index(drop=True)
    ordered = meta.sort_values([*volume_keys, "slice_index"], kind="stable")
    groups = ordered.groupby(list(volume_keys), sort=False)
    return [group.index.to_numpy() for _, group in groups]


def input_channels(context: int, position: bool) -> int:
    """The channels of :func:`image_context`'s output, so of a segmenter's input: the slice,
    ``context`` neighbours on either side and, if ``position``, its place in its stack.

    >>> input_channels(1, True)
    4
    """
    return 1 + 2 * context + int(position)


def image_context(slices: SliceSet, context: int, position: bool = False) -> np.ndarray:
    """float32 [N, 1 + 2 * context (+ 1), H, W]: each slice's image between its ``context``
    neighbours on either side in its volume (2.5D input), nearest first outwards: ``[z - c ..
    z .. z + c]``. Beyond the volume's ends the channel is zero, which tells the network it
    sits at the base or the apex. With ``position``, a last channel holds the slice's place in
    its stack, ``slice_index / (slice_count - 1)`` everywhere: how far from the base it is.

    >>> meta = pd.DataFrame({"patient": ["p"] * 2, "frame": [1, 1], "slice_index": [0, 1],
    ...                      "slice_count": [2, 2]})
    >>> image = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 2.0)]).astype(np.float32)
    >>> image_context(SliceSet(image, np.zeros((2, 2, 2), np.uint8), meta), 1)[:, :, 0, 0]
    array([[0., 1., 2.],
           [1., 2., 0.]], dtype=float32)
    """
    image = np.asarray(slices.image, dtype=np.float32)
    out = np.zeros((len(image), input_channels(context, False), *image.shape[-2:]), np.float32)
    for channel, offset in enumerate(range(-context, context + 1)):
        rows = neighbour_rows(slices.meta, offset=offset) if offset else np.arange(len(image))
        inside = rows >= 0
        out[inside, channel] = image[rows[inside]]
    if position:
        place = slices.meta["slice_index"].to_numpy() / np.maximum(
            slices.meta["slice_count"].to_numpy() - 1, 1
        )
        out = np.concatenate(
            [out, np.broadcast_to(place[:, None, None, None], (len(out), 1, *out.shape[-2:]))],
            axis=1,
            dtype=np.float32,
        )
    return out


def end_weights(meta: pd.DataFrame, weight: float, ends: int = 2) -> np.ndarray:
    """float64 [N]: ``weight`` for the ``ends`` outermost slices at either end of each slice's
    stack, 1 for the rest: how often a weighted sampler draws each training slice.

    >>> meta = pd.DataFrame({"slice_index": [0, 1, 2, 3, 4, 5], "slice_count": [6] * 6})
    >>> end_weights(meta, 3.0).tolist()
    [3.0, 3.0, 1.0, 1.0, 3.0, 3.0]
    """
    index = meta["slice_index"].to_numpy()
    from_end = np.minimum(index, meta["slice_count"].to_numpy() - 1 - index)
    return np.where(from_end < ends, weight, 1.0)


def save_split(path: Path, slices: SliceSet) -> None:
    """Write a split atomically (no pickles: plain arrays, strings as unicode arrays)."""
    arrays = {f"meta.{col}": slices.meta[col].to_numpy() for col in slices.meta.columns}
    arrays = {k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()}
    arrays.update({f"extra.{k}": v for k, v in slices.extra.items()})
    with atomic_file(path) as tmp:
        with tmp.open("wb") as fh:
            np.savez(fh, image=slices.image, label=slices.label, **arrays)


def read_npz(path: Path, what: str, missing: str = "run `dvc repro` to build it") -> dict:
    """Every array of the ``.npz`` at ``path``; a missing or unreadable file is one
    :class:`DataError` naming the path and ``what`` it should have been."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{what} not found ({missing})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable {what} ({exc})") from exc


def load_split(path: Path) -> SliceSet:
    """Read a split written by :func:`save_split`."""
    data = read_npz(path, "prepared split")
    meta = pd.DataFrame({k[5:]: v for k, v in data.items() if k.startswith("meta.")})
    extra = {k[6:]: v for k, v in data.items() if k.startswith("extra.")}
    return SliceSet(image=data["image"], label=data["label"], meta=meta, extra=extra)


def load_splits(
    folder: Path, names: Sequence[str] = ("train", "val", "test"), split_setting: str = ""
) -> dict[str, SliceSet]:
    """The ``names`` splits of a prepared folder, each refused when it holds no slices (nothing
    trains, chooses or tests on none); ``split_setting`` names the params that split it."""
    out = {name: load_split(Path(folder) / f"{name}.npz") for name in names}
    for name, slices in out.items():
        if len(slices) == 0:
            hint = (
                f" (too few patients to fill every split; use more patients or change "
                f"{split_setting})"
                if split_setting
                else ""
            )
            raise DataError(folder, f"the {name} split has no slices{hint}")
    return out
