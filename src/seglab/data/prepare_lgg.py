"""The ``prepare_lgg`` stage: the Kaggle LGG dataset -> patient-level splits of 2D slices.

Images keep the three sequences (pre-contrast, FLAIR, post-contrast) as channels, each
normalised per patient volume between its 1st and 99th percentile over the head, then stored
as uint8 (the source is uint8, so nothing is lost) to keep the prepared set compact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torchio as tio
from tqdm import tqdm

from seglab.config import LggDataParams
from seglab.data.lgg import LggDataset, open_lgg
from seglab.data.splits import patient_splits, rounding_note
from seglab.data.store import SliceSet, save_split
from seglab.io import atomic_dir, refuse_overwriting_inputs, write_json


def prepare_lgg(params: LggDataParams) -> str:
    """Build ``params.prepared``: ``train/val/test.npz`` and ``meta.json``; returns a summary."""
    refuse_overwriting_inputs({"lgg.prepared": params.prepared}, {"lgg.raw": params.raw})
    with open_lgg(params.raw) as dataset:
        # One stratum: every patient has a tumour; the split is still seeded and patient-level.
        splits = patient_splits({p.id: "LGG" for p in dataset.patients}, params.prepare.split)
        counts: dict[str, dict[str, int]] = {}
        with atomic_dir(params.prepared) as tmp:
            for split, ids in splits.items():
                slices = _prepare_patients(dataset, ids, params.prepare.size, split)
                save_split(tmp / f"{split}.npz", slices)
                counts[split] = {
                    "patients": len(ids),
                    "slices": len(slices),
                    "tumour_slices": int(slices.meta["has_tumour"].sum()),
                }
            write_json(
                tmp / "meta.json",
                {
                    "source": str(params.raw),
                    "params": params.prepare.model_dump(mode="json"),
                    "splits": splits,
                    "counts": counts,
                },
            )
    parts = ", ".join(
        f"{k} {v['patients']} patients / {v['slices']} slices ({v['tumour_slices']} with tumour)"
        for k, v in counts.items()
    )
    note = rounding_note(splits, params.prepare.split)
    return f"prepared LGG into {params.prepared}: {parts}" + (f"\n{note}" if note else "")


def normalise_volume(image: np.ndarray) -> np.ndarray:
    """[n, H, W, 3] uint8 -> same shape uint8, each channel stretched over its 1-99th percentile.

    Percentiles are taken over the head (non-zero voxels), so the black background does not
    pull the lower bound down.
    """
    out = np.empty_like(image, dtype=np.uint8)
    for c in range(image.shape[-1]):
        channel = image[..., c].astype(np.float32)
        inside = channel[channel > 0]
        lo, hi = np.percentile(inside, (1, 99)) if inside.size else (0.0, 1.0)
        scaled = np.clip((channel - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        out[..., c] = np.round(scaled * 255).astype(np.uint8)
    return out


def _prepare_patients(dataset: LggDataset, ids: list[str], size: int, split: str) -> SliceSet:
    images, masks, rows = [], [], []
    for pid in tqdm(ids, desc=f"prepare {split}", unit="patient", leave=False):
        volume = dataset.load(pid)
        image = normalise_volume(volume.image)  # [n, H, W, 3]
        mask = volume.mask  # [n, H, W]
        n = len(image)
        if image.shape[1:3] != (size, size):
            image, mask = _resize(image, mask, size)
        images.append(np.moveaxis(image, 3, 1))  # [n, 3, S, S]
        masks.append(mask)
        rows.extend(
            {
                "patient": pid,
                "slice_number": num,
                "slice_index": i,
                "slice_count": n,
                "has_tumour": bool(mask[i].any()),
            }
            for i, num in enumerate(volume.slice_numbers)
        )
    meta = pd.DataFrame(
        rows, columns=["patient", "slice_number", "slice_index", "slice_count", "has_tumour"]
    )
    return SliceSet(
        image=np.concatenate(images) if images else np.zeros((0, 3, size, size), np.uint8),
        label=np.concatenate(masks) if masks else np.zeros((0, size, size), np.uint8),
        meta=meta,
    )


def _resize(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """In-plane resize of a whole volume with torchio (linear image, nearest mask)."""
    n = len(image)
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=torch.from_numpy(np.moveaxis(image, (3, 0), (0, 3)).copy())),
        mask=tio.LabelMap(tensor=torch.from_numpy(np.moveaxis(mask, 0, 2)[None].copy())),
    )
    out = tio.Resize((size, size, n))(subject)
    img = np.moveaxis(out["image"].data.numpy(), (0, 3), (3, 0))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), np.moveaxis(
        out["mask"].data[0].numpy(), 2, 0
    ).astype(np.uint8)
