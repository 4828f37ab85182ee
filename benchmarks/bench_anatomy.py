"""Throughput of the metrics: anatomical validity (1 and N workers) and Dice/HD95.

Scores ``--slices`` label slices of 128x128: the ACDC ground-truth slices under ``--data``
(each resampled to 128x128, nearest neighbour, spacing scaled, repeated up to the count),
or generated heart-like shapes when no data is given. Not a test: run it and read it.

    uv run --frozen python benchmarks/bench_anatomy.py --data ../shared/data/acdc
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from seglab.metrics.anatomy import check_slices
from seglab.metrics.overlap import overlap, summarize_overlap


def acdc_slices(root: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ground-truth slice under ``root`` resampled to size x size, with its spacing."""
    labels, spacing = [], []
    for path in sorted(root.glob("database/*/patient*/patient*_frame??_gt.nii.gz")):
        image = nib.load(str(path))
        volume = np.moveaxis(np.asanyarray(image.dataobj), 2, 0).astype(np.float32)
        resized = torch.nn.functional.interpolate(
            torch.from_numpy(volume)[:, None], size=(size, size), mode="nearest-exact"
        )
        labels.append(resized[:, 0].numpy().astype(np.uint8))
        sy, sx = image.header.get_zooms()[:2]
        spacing += [(sy * volume.shape[1] / size, sx * volume.shape[2] / size)] * len(volume)
    if not labels:
        raise SystemExit(f"no patient*_frame??_gt.nii.gz under {root}/database")
    return np.concatenate(labels), np.asarray(spacing, dtype=np.float64)


def generated_slices(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hearts of random size and place: LV disc, MYO ring, RV crescent, some apical/empty."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((count, size, size), np.uint8)
    for lab in labels:
        if rng.random() < 0.05:
            continue
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        outer = rng.uniform(0.08, 0.2) * size
        inner = outer * rng.uniform(0.5, 0.8)
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        lab[r2 < outer**2] = 2
        lab[r2 < inner**2] = 3
        if rng.random() < 0.8:
            angle = rng.uniform(0, 2 * np.pi)
            ry, rx = cy + outer * np.sin(angle), cx + outer * np.cos(angle)
            lab[((yy - ry) ** 2 + (xx - rx) ** 2 < (outer * 0.9) ** 2) & (r2 >= outer**2)] = 1
    return labels, rng.uniform(1.2, 2.5, (count, 1)).repeat(2, axis=1)


def timed(label: str, count: int, run) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    rate = count / wall
    print(
        f"{label}: {count} slices in {wall:.2f} s -> {rate:,.0f} slices/s (parent CPU {cpu:.2f} s)"
    )
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help="ACDC root (holding database/); default: generated shapes"
    )
    parser.add_argument("--slices", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--overlap-slices", type=int, default=2_000, help="slices for the Dice/HD95 timing"
    )
    args = parser.parse_args()

    if args.data:
        base, base_spacing = acdc_slices(args.data, args.size)
        source = f"{len(base)} ACDC ground-truth slices from {args.data}"
    else:
        base, base_spacing = generated_slices(args.slices, args.size)
        source = "generated hearts"
    repeat = np.arange(args.slices) % len(base)
    labels, spacing = base[repeat], base_spacing[repeat]
    print(f"{args.slices} slices of {args.size}x{args.size} ({source})")

    results = {}
    for workers in args.workers:
        timed(
            f"anatomy workers={workers}",
            len(labels),
            lambda w=workers: results.__setitem__(w, check_slices(labels, spacing, workers=w)),
        )
    first = results[args.workers[0]]
    assert all((r.errors == first.errors).all() for r in results.values())
    print(f"validity {first.summary()['anatomical_validity']:.4f}")

    # A prediction one pixel off the ground truth, so that HD95 has something to measure.
    count = min(args.overlap_slices, len(labels))
    gt = labels[:count]
    pred = np.roll(gt, 1, axis=1)
    summary = {}
    timed(
        "dice+hd95",
        count,
        lambda: summary.update(summarize_overlap(overlap(pred, gt, spacing[:count]))),
    )
    print(f"dice_mean {summary['dice_mean']:.4f}, hd95_mean {summary['hd95_mean']:.2f} mm")


if __name__ == "__main__":
    main()
