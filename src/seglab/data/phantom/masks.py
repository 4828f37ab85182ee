"""Small generated heart masks for tests and benchmarks of mask models.

The full phantom (``seglab.data.phantom.acdc``) writes NIfTI volumes with images; models of
masks (the NVAE, correctors, metrics) only need plausible 2D label maps, fast and in memory.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seglab.data.store import SliceSet

RV, MYO, LV = 1, 2, 3  # the ACDC label ids (seglab.data.acdc.LABELS)


def heart_masks(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 ``[n, size, size]`` label maps: an LV disc in a MYO ring, an RV crescent beside it,
    with seeded jitter of centre and radius (anatomically valid at any size >= 32)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(float)
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = size / 2 + rng.uniform(-2, 2, 2)
        r = size * rng.uniform(0.12, 0.18)
        d = np.hypot(yy - cy, xx - cx)
        rv = (np.hypot(yy - cy, xx - (cx - 1.6 * r)) < 1.6 * r) & (d >= 1.5 * r)
        out[i][rv] = RV
        out[i][d < 1.5 * r] = MYO
        out[i][d < r] = LV
    return out


def heart_slices(n: int, size: int = 32, seed: int = 0, patients: int = 2) -> SliceSet:
    """A prepared split of :func:`heart_masks`: ``patients`` ED volumes (base to apex) with the
    metadata columns of a real split, the image a scaled copy of the labels."""
    per = -(-n // patients)
    meta = pd.DataFrame(
        {
            "patient": [f"patient{seed:02d}{i // per}" for i in range(n)],
            "group": "NOR",
            "phase": "ED",
            "frame": np.ones(n, np.int16),
            "slice_index": np.array([i % per for i in range(n)], np.int16),
            "slice_count": np.full(n, per, np.int16),
            "spacing_x": np.full(n, 200.0 / size, np.float32),
            "spacing_y": np.full(n, 200.0 / size, np.float32),
            "thickness": np.full(n, 10.0, np.float32),
        }
    )
    label = heart_masks(n, size, seed)
    return SliceSet(image=label.astype(np.float32) / 3, label=label, meta=meta)
