"""A compact pack of a prepared ACDC dataset, small enough to travel to a GPU machine that cannot
read ``../shared`` (the device tool carries 64 MiB in all, wheels included).

The prepared splits (``seglab prepare acdc``: motion crop, 128 x 128, intensities in [0, 1])
are stored with the images quantised to uint8 (a step of 1/255, below the scanner's noise) and
compressed; the labels and the per-slice metadata are kept as they are. The 100 shared ACDC
patients pack into about 20 MiB.

    uv run python benchmarks/gpu/pack.py --prepared data/prepared/acdc --out .gpupack/acdc.npz
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seglab.data.splits import SPLITS
from seglab.data.store import SliceSet, load_split
from seglab.errors import DataError
from seglab.io import atomic_file

LIMIT_MIB = 40.0


def make_pack(prepared: Path, out: Path, limit_mib: float = LIMIT_MIB) -> float:
    """Pack ``prepared/{train,val,test}.npz`` into ``out``; its size in MiB. Refuses a pack over
    ``limit_mib`` (it would not travel beside the wheels) and writes nothing then."""
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        slices = load_split(Path(prepared) / f"{split}.npz")
        if slices.image.min() < 0 or slices.image.max() > 1:
            raise DataError(prepared / f"{split}.npz", "images are not in [0, 1]: not prepared")
        arrays[f"{split}.image"] = np.round(slices.image * 255).astype(np.uint8)
        arrays[f"{split}.label"] = slices.label
        for col in slices.meta.columns:
            values = slices.meta[col].to_numpy()
            arrays[f"{split}.meta.{col}"] = values.astype(str) if values.dtype == object else values
    with atomic_file(out) as tmp:
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, **arrays)
        mib = tmp.stat().st_size / 2**20
        if mib > limit_mib:
            raise DataError(out, f"pack is {mib:.1f} MiB, over the {limit_mib:.0f} MiB limit")
    return mib


def load_pack(path: Path) -> dict[str, SliceSet]:
    """The splits of a pack, images back to float32 in [0, 1]."""
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    out = {}
    for split in SPLITS:
        prefix = f"{split}.meta."
        meta = pd.DataFrame({k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)})
        image = data[f"{split}.image"].astype(np.float32) / 255
        out[split] = SliceSet(image=image, label=data[f"{split}.label"], meta=meta)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/acdc"))
    parser.add_argument("--out", type=Path, default=Path(".gpupack/acdc.npz"))
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mib = make_pack(args.prepared, args.out)
    sizes = {split: len(s) for split, s in load_pack(args.out).items()}
    print(f"wrote {args.out}: {mib:.1f} MiB, slices {sizes}")


if __name__ == "__main__":
    main()
