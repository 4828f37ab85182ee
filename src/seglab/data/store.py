"""The prepared-slice format: one uncompressed ``.npz`` per split, loaded whole into memory.

ACDC at 128x128 is ~2,000 slices per split (~130 MB of float32): one file read per split beats
per-slice files, and the arrays go straight to tensors without per-item I/O in the training
loop. Metadata travels as columns in the same file, so a split is self-describing.
"""

from __future__ import annotations

import zipfile
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


def save_split(path: Path, slices: SliceSet) -> None:
    """Write a split atomically (no pickles: plain arrays, strings as unicode arrays)."""
    arrays = {f"meta.{col}": slices.meta[col].to_numpy() for col in slices.meta.columns}
    arrays = {k: v.astype(str) if v.dtype == object else v for k, v in arrays.items()}
    arrays.update({f"extra.{k}": v for k, v in slices.extra.items()})
    with atomic_file(path) as tmp:
        with tmp.open("wb") as fh:
            np.savez(fh, image=slices.image, label=slices.label, **arrays)


def load_split(path: Path) -> SliceSet:
    """Read a split written by :func:`save_split`."""
    if not path.is_file():
        raise DataError(path, "prepared split not found (run `dvc repro` to build it)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(path, f"not a readable prepared split ({exc})") from exc
    meta = pd.DataFrame({k[5:]: v for k, v in data.items() if k.startswith("meta.")})
    extra = {k[6:]: v for k, v in data.items() if k.startswith("extra.")}
    return SliceSet(image=data["image"], label=data["label"], meta=meta, extra=extra)
