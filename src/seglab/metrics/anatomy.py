"""Anatomical validity of 2D short-axis cardiac masks: the 16 criteria of Painchaud et al.

Reference: Painchaud et al., "Cardiac Segmentation with Strong Anatomical Guarantees",
IEEE TMI 39(11), 2020; thresholds and definitions from the project's design note
``anatomy.md``, and the reference implementation's choices where the note is silent.
Labels: 0 background, 1 RV, 2 MYO, 3 LV. A slice is valid when no criterion fails; an
all-background slice is valid, and a criterion about an absent structure never fails.

Every slice is cropped to its foreground bounding box and padded with ``_PAD`` background
pixels before anything is computed. Everything outside that box is background connected
to the image border, so enclosure, adjacency and distances are unchanged; the padding is
the "1-px padding" of the definitions (a structure touching the image border does not
enclose the pixels it cuts off against the border). Distances are in mm from the slice's
own spacing ``(mm along axis 0, mm along axis 1)``.

Interpretations that the table leaves open (each one is pinned by a test):

- Holes in a structure S (1-3): pixels of any other label enclosed by S, i.e. connected
  components of ``not S`` (8-connected) that do not reach the padding. For the MYO, the LV
  cavity is not a hole: the LV pixels of an enclosed component are not counted, everything
  else in it is (background or RV inside the ring, a hole of the LV too), as in the
  reference implementation (enclosed non-MYO pixels minus the LV's). So a background gap
  of any size opened between the LV and a closed myocardium is a hole of the MYO, not
  only when criterion 7's size floor lets it through.
- Disconnectivity (4-6): S has more than one 8-connected component.
- Holes between A and MYO (7-8), as in the reference implementation: with 4-connectivity,
  first fill the holes of A that contain no MYO and the holes of MYO that contain no A
  (so the LV cavity is filled when judging RV/MYO, and a hole inside one structure,
  which criteria 1-3 report, is not counted again); the pixels of ``not (A or MYO)``
  still enclosed are the holes between them; error when they exceed ``H*W/2**14``
  pixels, H and W being those of the whole slice. A smaller gap between LV and MYO is an
  error all the same: criterion 3 reports it where the MYO closes around it, criterion 11
  wherever more than 1 LV pixel touches it.
- RV disconnected from MYO (9): the 3x3-dilated RV does not overlap the MYO (the
  reference's distance from the dilated RV to the MYO is then > 0 mm).
- Frontier LV/RV (10): more than 1 LV pixel lies in the 3x3-dilated RV.
- Frontier LV/background (11): more than 1 LV pixel lies in the 3x3-dilated background,
  any background, as the table and the reference implementation have it: background
  enclosed in the myocardium and touching the LV (a gap between LV and MYO, a hole of the
  LV) separates the LV from its wall as much as an opening to the outside does. An LV
  hole therefore fails criteria 1 and 11 together (and 3 inside a closed MYO), as in the
  reference implementation.
- Concavity (12-14): on the hole-filled structure (``binary_fill_holes``, 4-connected
  background, which closes a ring broken only diagonally): ``convex_hull_image`` minus
  the shape, eroded by a 3x3 square, then the largest Euclidean distance (in mm) from
  those pixels to the outside of the hull. For the MYO the filled shape includes the
  cavity, so only its outer contour matters; threshold 0 mm means any concavity at least
  3 pixels wide fails. All components of the structure are included, as in the reference.
- Circularity (15-16): ``4*pi*area / perimeter**2`` of the hole-filled structure, area in
  pixels and ``skimage.measure.perimeter(neighborhood=4)``; dimensionless, computed in pixel
  units like the reference (in-plane pixels are square in ACDC).

Speed (about 2,500 slices/s of 128x128 ACDC masks on one core): slices are cropped and
stacked by crop size, and every labelling, dilation, erosion and count runs once per
stack with 2D structuring elements (``_Components``). The per-slice work left is the
convex hull, and most hulls are skipped by exact screens: the bounding box bounds the
depth from above, and a 16-gon containing the hull shows that no 3x3 pocket can exist
(``_may_have_pocket``); the hulls still needed come from scipy's qhull, rasterised here
(``_hull``, equal to skimage's ``convex_hull_image`` pixel for pixel, ~20x faster).
``workers`` > 1 scores the stacks in a process pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from seglab.data.labels import BACKGROUND, LV, MYO, NUM_LABELS, RV
from seglab.errors import DataError

if TYPE_CHECKING:
    from seglab.data.store import SliceSet

CRITERIA: tuple[str, ...] = (
    "holes_in_lv",
    "holes_in_rv",
    "holes_in_myo",
    "disconnectivity_in_lv",
    "disconnectivity_in_rv",
    "disconnectivity_in_myo",
    "holes_between_lv_and_myo",
    "holes_between_rv_and_myo",
    "rv_disconnected_from_myo",
    "frontier_between_lv_and_rv",
    "frontier_between_lv_and_background",
    "lv_concavity",
    "rv_concavity",
    "myo_concavity",
    "lv_circularity",
    "myo_circularity",
)
"""The 16 criteria, in the order of the table of anatomy.md (bit i of an error vector)."""

LV_CONCAVITY_MM = 4.0
RV_CONCAVITY_MM = 30.0
MYO_CONCAVITY_MM = 0.0
MIN_CIRCULARITY = 0.2

_PAD = 1
_CHUNK = 256
_EPS = 1e-6
_S4 = np.zeros((3, 3, 3), dtype=bool)
_S4[1] = ndimage.generate_binary_structure(2, 1)
_S8 = np.zeros((3, 3, 3), dtype=bool)
_S8[1] = True
_INDEX = {name: i for i, name in enumerate(CRITERIA)}
# skimage.measure.perimeter(neighborhood=4): weight of each 3x3 code of the border image.
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2


class _Components:
    """Connected components of a stack of 2D masks, labelled slice by slice in one call.

    The structuring element has empty planes above and below, so components never cross
    slices. scipy numbers components in raster order, so slice i owns the labels
    ``ends[i-1]+1 .. ends[i]``: per-slice counts and the slice of a label come without
    another pass over the pixels. ``outside[k]`` marks the component that holds the
    padding of its slice (labels[:, 0, 0]), i.e. the one connected to the image border.
    """

    def __init__(self, mask: np.ndarray, structure: np.ndarray) -> None:
        self.labels, count = ndimage.label(mask, structure)
        self.ends = np.maximum.accumulate(self.labels.reshape(len(mask), -1).max(axis=1))
        self.outside = np.zeros(count + 1, dtype=bool)
        self.outside[self.labels[:, 0, 0]] = True
        self.outside[0] = False

    def per_slice(self) -> np.ndarray:
        """Number of components in each slice."""
        return np.diff(self.ends, prepend=0)

    def enclosed(self) -> np.ndarray:
        """bool [count+1]: components not connected to the border (label 0 excluded)."""
        inside = ~self.outside
        inside[0] = False
        return inside

    def any_per_slice(self, which: np.ndarray) -> np.ndarray:
        """bool [N]: the slice holds a component flagged in ``which`` (bool [count+1])."""
        hit = np.zeros(len(self.ends), dtype=bool)
        hit[np.searchsorted(self.ends, np.flatnonzero(which), side="left")] = True
        return hit


def _shift_or(mask: np.ndarray) -> np.ndarray:
    """3x3 dilation of every slice (separable: rows then columns)."""
    rows = mask.copy()
    rows[:, 1:] |= mask[:, :-1]
    rows[:, :-1] |= mask[:, 1:]
    out = rows.copy()
    out[:, :, 1:] |= rows[:, :, :-1]
    out[:, :, :-1] |= rows[:, :, 1:]
    return out


def _erode(mask: np.ndarray, square: bool) -> np.ndarray:
    """3x3 (``square``) or cross erosion of every slice, pixels beyond the edge count as False."""
    out = mask.copy()
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[:, [0, -1]] = False
    src = out.copy() if square else mask
    out[:, :, 1:] &= src[:, :, :-1]
    out[:, :, :-1] &= src[:, :, 1:]
    out[:, :, [0, -1]] = False
    return out


def _extent(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index and length of the True run hull of each row of a [N, L] bool array."""
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    return first, last - first + 1


def _hull(shape: np.ndarray) -> np.ndarray:
    """``skimage.morphology.convex_hull_image(shape)`` (same pixels), about 20x faster.

    skimage takes ~1 ms per call, which would dominate scoring. Same definition: the hull of
    the midpoints of the pixel edges, pixel centres inside or on it. Only each row's end
    pixels can be vertices; the polygon (scipy's qhull) is rasterised row by row from its
    half-planes ``a*y + b*x + c <= 0``.
    """
    height, width = shape.shape
    rows = np.flatnonzero(shape.any(axis=1))
    left, length = _extent(shape[rows])
    right = left + length - 1
    y = np.concatenate([rows, rows, rows, rows, rows, rows]) * 2
    x = np.concatenate([left, left, left, right, right, right]) * 2
    y = y + np.repeat([0, -1, 1, 0, -1, 1], len(rows))
    x = x + np.repeat([-1, 0, 0, 1, 0, 0], len(rows))
    keys = np.unique((y + 2) * (2 * width + 4) + (x + 2))  # doubled coords; drop duplicates
    points = np.column_stack([keys // (2 * width + 4) - 2, keys % (2 * width + 4) - 2]) / 2.0
    a, b, c = ConvexHull(points).equations.T
    limit = -(np.arange(height)[:, None] * a + c)  # [H, E]: b * x <= limit
    right_side, left_side, level = b > _EPS, b < -_EPS, np.abs(b) <= _EPS
    high = np.min(limit[:, right_side] / b[right_side], axis=1, initial=np.inf)
    low = np.max(limit[:, left_side] / b[left_side], axis=1, initial=-np.inf)
    row_ok = np.all(limit[:, level] >= -_EPS, axis=1)
    cols = np.arange(width)
    return (cols >= low[:, None] - _EPS) & (cols <= high[:, None] + _EPS) & row_ok[:, None]


# Half-planes a*y + b*x <= max + floor(max(|a|, |b|) / 2) (and the same from below) that hold
# every hull pixel: the hull is built on pixel-edge midpoints, 0.5 pixel from the centres.
_SCREEN_DIRECTIONS = ((1, 1), (1, -1), (1, 2), (2, 1), (1, -2), (2, -1))


def _window(values: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` over each run of 3 consecutive rows: [N, H] -> [N, H - 2]."""
    return reduce(reduce(values[:, :-2], values[:, 1:-1]), values[:, 2:])


def _may_have_pocket(filled: np.ndarray) -> np.ndarray:
    """bool [N]: False only where the hull minus the shape provably holds no 3x3 block.

    An exact screen that saves most hulls: when every row of the shape is one run and runs
    of consecutive rows overlap, the bounding box cut by the 12 half-planes above (a 16-gon
    at most ~2% of the shape's radius wider than its hull) contains the hull; if the free
    pixels left and right of the runs inside it hold no 3x3 block, neither does the hull.
    Everything here is [N, H] arrays.
    """
    height = filled.shape[2]
    rows = np.arange(filled.shape[1])
    filled_rows = filled.any(axis=2)
    top, span = _extent(filled_rows)
    inside = (rows >= top[:, None]) & (rows < (top + span)[:, None])
    left = filled.argmax(axis=2)
    right = height - 1 - filled[:, :, ::-1].argmax(axis=2)
    runs = filled_rows & (np.count_nonzero(filled, axis=2) == right - left + 1)
    simple = np.all(~inside | runs, axis=1)
    pairs = inside[:, 1:] & inside[:, :-1]
    overlap = (left[:, 1:] <= right[:, :-1]) & (left[:, :-1] <= right[:, 1:])
    simple &= np.all(~pairs | overlap, axis=1)
    low = np.where(inside, left, height).min(axis=1)[:, None].astype(float)
    high = np.where(inside, right, -1).max(axis=1)[:, None].astype(float)
    y = rows[None, :].astype(float)
    for a, b in _SCREEN_DIRECTIONS:
        ends = (a * y + b * left, a * y + b * right)
        most = np.where(inside, np.maximum(*ends), -np.inf).max(axis=1)[:, None]
        least = np.where(inside, np.minimum(*ends), np.inf).min(axis=1)[:, None]
        slack = max(a, abs(b)) // 2
        upper = (most + slack - a * y) / b
        lower = (least - slack - a * y) / b
        if b < 0:
            upper, lower = lower, upper
        high = np.minimum(high, np.floor(upper + 1e-9))
        low = np.maximum(low, np.ceil(lower - 1e-9))
    rows3 = _window(inside, np.logical_and)
    left_gap = _window(left, np.minimum) - _window(low, np.maximum)
    right_gap = _window(high, np.minimum) - _window(right, np.maximum)
    return ~simple | np.any(rows3 & ((left_gap >= 3) | (right_gap >= 3)), axis=1)


def _concave(filled: np.ndarray, spacing: np.ndarray, threshold: float) -> np.ndarray:
    """bool [N]: the deepest concavity of each filled shape is deeper than ``threshold`` mm."""
    rows_any, cols_any = filled.any(axis=2), filled.any(axis=1)
    top, height = _extent(rows_any)
    left, width = _extent(cols_any)
    # The hull lies in the bounding box, so no hull pixel is deeper than half the box.
    bound = np.minimum((height + 1) / 2 * spacing[:, 0], (width + 1) / 2 * spacing[:, 1])
    todo = np.flatnonzero(rows_any.any(axis=1) & (bound > threshold) & _may_have_pocket(filled))
    hull = np.zeros_like(filled)
    for i in todo:
        box = np.s_[i, top[i] : top[i] + height[i], left[i] : left[i] + width[i]]
        hull[box] = _hull(filled[box])
    pocket = _erode(hull & ~filled, square=True)
    deep = pocket.any(axis=(1, 2))
    # A pocket pixel has its 8 neighbours in the hull: >= 2 pixels from the hull's outside.
    for i in np.flatnonzero(deep & (2 * spacing.min(axis=1) <= threshold)):
        depth = ndimage.distance_transform_edt(hull[i], sampling=spacing[i])[pocket[i]].max()
        deep[i] = depth > threshold
    return deep


def _not_circular(filled: np.ndarray) -> np.ndarray:
    """bool [N]: 4*pi*area/perimeter**2 < 0.2 (perimeter as skimage's, 4-neighbourhood)."""
    border = (filled & ~_erode(filled, square=False)).astype(np.uint8)
    code = border.copy()
    code[:, 1:] += 2 * border[:, :-1]
    code[:, :-1] += 2 * border[:, 1:]
    code[:, :, 1:] += 2 * border[:, :, :-1]
    code[:, :, :-1] += 2 * border[:, :, 1:]
    code[:, 1:, 1:] += 10 * border[:, :-1, :-1]
    code[:, 1:, :-1] += 10 * border[:, :-1, 1:]
    code[:, :-1, 1:] += 10 * border[:, 1:, :-1]
    code[:, :-1, :-1] += 10 * border[:, 1:, 1:]
    length = _PERIMETER_WEIGHTS[code].sum(axis=(1, 2))
    area = _count(filled)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (length > _EPS) & (4 * math.pi * area / length**2 < MIN_CIRCULARITY)


def _holes_between(
    a: np.ndarray, myo: np.ndarray, not_a: _Components, not_myo: _Components, small: float
) -> np.ndarray:
    """bool [N]: criterion 7/8, pixels enclosed by A and MYO together (4-conn) > ``small``."""
    union = a | myo
    for own, other in ((not_a, myo), (not_myo, a)):
        fill = own.enclosed()
        fill[own.labels[other]] = False  # a hole holding the other structure stays open
        union |= fill[own.labels]
    rest = _Components(~union, _S4)
    trapped = ~rest.outside[rest.labels] & ~union
    return _count(trapped) > small


def _count(mask: np.ndarray) -> np.ndarray:
    """True pixels per slice of a [N, H, W] bool stack."""
    return mask.reshape(len(mask), -1).view(np.uint8).sum(axis=1, dtype=np.int64)


def _holes8(
    mask: np.ndarray, candidates: np.ndarray, counted: np.ndarray | None = None
) -> np.ndarray:
    """bool [N]: a pixel of ``not mask`` (of ``counted`` if given) lies off the border, 8-conn.

    An 8-connected component is a union of 4-connected ones, so only ``candidates`` (slices
    whose 4-connected labelling already found such a pixel) are labelled again.
    """
    holes = np.zeros(len(mask), dtype=bool)
    index = np.flatnonzero(candidates)
    if index.size:
        comps = _Components(~mask[index], _S8)
        if counted is None:
            holes[index] = comps.any_per_slice(comps.enclosed())
        else:
            inside = ~comps.outside[comps.labels]  # also True on ``mask``: not in ``counted``
            holes[index] = _count(inside & counted[index]) > 0
    return holes


def _check_chunk(stack: np.ndarray, spacing: np.ndarray, small: float) -> np.ndarray:
    """Error matrix [n, 16] of a stack of padded crops (background on every crop's border)."""
    errors = np.zeros((len(stack), len(CRITERIA)), dtype=bool)
    lv, myo, rv = stack == LV, stack == MYO, stack == RV
    background = stack == BACKGROUND
    has_lv, has_myo, has_rv = (_count(m) > 0 for m in (lv, myo, rv))

    def put(name: str, flags: np.ndarray) -> None:
        errors[:, _INDEX[name]] = flags

    not_lv4, not_rv4, not_myo4 = (_Components(~m, _S4) for m in (lv, rv, myo))
    put("holes_in_lv", _holes8(lv, not_lv4.per_slice() > 1))
    put("holes_in_rv", _holes8(rv, not_rv4.per_slice() > 1))
    # The LV cavity is not a hole of the MYO; anything else it encloses is (see the notes).
    not_cavity = ~myo & ~lv
    enclosed4 = _count(not_cavity & ~not_myo4.outside[not_myo4.labels]) > 0
    put("holes_in_myo", _holes8(myo, enclosed4, not_cavity))
    put("disconnectivity_in_lv", _Components(lv, _S8).per_slice() > 1)
    put("disconnectivity_in_rv", _Components(rv, _S8).per_slice() > 1)
    put("disconnectivity_in_myo", _Components(myo, _S8).per_slice() > 1)
    put("holes_between_lv_and_myo", _holes_between(lv, myo, not_lv4, not_myo4, small))
    put("holes_between_rv_and_myo", _holes_between(rv, myo, not_rv4, not_myo4, small))

    rv_grown = _shift_or(rv)
    put("rv_disconnected_from_myo", has_rv & has_myo & (_count(rv_grown & myo) == 0))
    put("frontier_between_lv_and_rv", _count(lv & rv_grown) > 1)
    put("frontier_between_lv_and_background", _count(lv & _shift_or(background)) > 1)

    # binary_fill_holes with its default (4-connected background): the not-outside part.
    filled_lv, filled_rv, filled_myo = (~c.outside[c.labels] for c in (not_lv4, not_rv4, not_myo4))
    put("lv_concavity", _concave(filled_lv, spacing, LV_CONCAVITY_MM))
    put("rv_concavity", _concave(filled_rv, spacing, RV_CONCAVITY_MM))
    put("myo_concavity", _concave(filled_myo, spacing, MYO_CONCAVITY_MM))
    put("lv_circularity", _not_circular(filled_lv))
    put("myo_circularity", _not_circular(filled_myo))
    return errors


def _chunks(labels: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(slice indices, stack of their padded crops): non-empty slices cropped to their
    foreground, sorted by crop size so that each stack wastes little padding."""
    foreground = labels != BACKGROUND
    rows_any, cols_any = foreground.any(axis=2), foreground.any(axis=1)
    top, height = _extent(rows_any)
    left, width = _extent(cols_any)
    busy = np.flatnonzero(rows_any.any(axis=1))
    busy = busy[np.argsort(np.maximum(height[busy], width[busy]), kind="stable")]
    for start in range(0, len(busy), _CHUNK):
        part = busy[start : start + _CHUNK]
        shape = (len(part), height[part].max() + 2 * _PAD, width[part].max() + 2 * _PAD)
        stack = np.zeros(shape, dtype=np.uint8)
        for j, i in enumerate(part):
            stack[j, _PAD : _PAD + height[i], _PAD : _PAD + width[i]] = labels[
                i, top[i] : top[i] + height[i], left[i] : left[i] + width[i]
            ]
        yield part, stack


def _score(labels: np.ndarray, spacing: np.ndarray, workers: int = 1) -> np.ndarray:
    """Error matrix [N, 16]; with ``workers`` > 1 the crop stacks (not the whole slices)
    are scored in that many processes."""
    errors = np.zeros((len(labels), len(CRITERIA)), dtype=bool)
    if labels.size == 0:
        return errors
    small = labels.shape[1] * labels.shape[2] / 2**14
    if workers <= 1:
        for part, stack in _chunks(labels):
            errors[part] = _check_chunk(stack, spacing[part], small)
        return errors
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = [
            (part, pool.submit(_check_chunk, stack, spacing[part], small))
            for part, stack in _chunks(labels)
        ]
        for part, job in jobs:
            errors[part] = job.result()
    return errors


def _validate_labels(labels: np.ndarray, ndim: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != ndim:
        raise ValueError(f"expected a {ndim}D label array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.array_equal(labels, np.round(labels)):
        raise ValueError("labels must be whole numbers 0..3")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_LABELS):
        raise ValueError(f"labels must lie in 0..{NUM_LABELS - 1}")
    return labels.astype(np.uint8, copy=False)


def check_slice(label: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Error vector (bool [16], order of ``CRITERIA``) of one [H, W] label slice.

    ``spacing`` is the pixel size in mm along axis 0 and axis 1 of ``label``.
    """
    label = _validate_labels(label, 2)
    return _score(label[None], np.asarray([spacing], dtype=np.float64))[0]


@dataclass(frozen=True)
class AnatomyResult:
    """Per-slice anatomical errors of a set of slices."""

    errors: np.ndarray
    """bool [N, 16]: ``errors[i, j]`` is True when slice i fails ``criteria[j]``."""
    criteria: tuple[str, ...] = field(default=CRITERIA)

    @property
    def valid(self) -> np.ndarray:
        """bool [N]: no criterion fails."""
        return ~self.errors.any(axis=1)

    def failed(self, index: int) -> list[str]:
        """Names of the criteria slice ``index`` fails."""
        return [name for name, bad in zip(self.criteria, self.errors[index], strict=True) if bad]

    def summary(self) -> dict[str, Any]:
        """Dataset figures: validity rate, slice counts and errors per criterion."""
        slices = int(self.errors.shape[0])
        valid = int(self.valid.sum())
        return {
            "anatomical_validity": valid / slices if slices else float("nan"),
            "slices": slices,
            "valid_slices": valid,
            "errors_per_criterion": {
                name: int(count)
                for name, count in zip(self.criteria, self.errors.sum(axis=0), strict=True)
            },
        }


def check_slices(
    labels: np.ndarray, spacing: np.ndarray | Sequence[Sequence[float]], workers: int = 1
) -> AnatomyResult:
    """Check every slice of ``labels`` [N, H, W] with its own spacing ``[N, 2]`` (mm).

    ``spacing`` may also be a single ``(sy, sx)`` pair shared by all slices. With
    ``workers`` > 1, chunks of up to 256 slices are scored in that many processes.
    """
    labels = _validate_labels(labels, 3)
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.shape == (2,):
        spacing = np.broadcast_to(spacing, (len(labels), 2))
    if spacing.shape != (len(labels), 2):
        raise ValueError(
            f"spacing must be [N, 2] or [2], got {spacing.shape} for {len(labels)} slices"
        )
    if len(labels) <= _CHUNK:
        workers = 1  # one chunk: a pool would only add its start-up
    return AnatomyResult(_score(labels, spacing, workers))


def anatomy_qc(slices: SliceSet) -> dict[str, Any]:
    """Anatomical validity of a split's ground-truth masks at the prepared resolution (the
    preparation's check; here, not in evaluation, so preparing needs no networks)."""
    return check_slices(slices.label, slices.spacing).summary()


def _read_label_volume(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 3D label volume (values 0..3) and its in-plane zooms, or a DataError naming the file."""
    if not path.is_file():
        raise DataError(path, "no such file")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
        zooms = tuple(float(z) for z in image.header.get_zooms())
    except Exception as exc:  # nibabel, gzip, zlib and numpy all raise their own types
        reason = " ".join(str(exc).split())  # one line, whatever the library wrote
        raise DataError(
            path, f"not a readable NIfTI label volume ({type(exc).__name__}: {reason})"
        ) from exc
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D label volume, got shape {data.shape}")
    if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
        raise DataError(path, "labels must be whole numbers 0..3")
    low, high = data.min(), data.max()
    if low < 0 or high >= NUM_LABELS:
        raise DataError(path, f"labels must lie in 0..3, found values from {low:g} to {high:g}")
    if min(zooms[:2]) <= 0:
        raise DataError(path, f"non-positive in-plane spacing {zooms[:2]}")
    return data.astype(np.uint8), (zooms[0], zooms[1])


def volume_report(path: Path) -> dict[str, Any]:
    """Per-slice validity of every z slice of a label NIfTI, with the header's in-plane spacing."""
    path = Path(path)
    data, spacing = _read_label_volume(path)
    slices = np.moveaxis(data, 2, 0)
    result = check_slices(slices, spacing)
    summary = result.summary()
    return {
        "file": str(path),
        "spacing_mm": list(spacing),
        "slices": summary["slices"],
        "valid_slices": summary["valid_slices"],
        "anatomical_validity": summary["anatomical_validity"],
        "errors_per_criterion": summary["errors_per_criterion"],
        "per_slice": [
            {"slice": z, "valid": bool(result.valid[z]), "failed": result.failed(z)}
            for z in range(len(slices))
        ],
    }


def render_volume_report(report: dict[str, Any]) -> str:
    """A readable table of ``volume_report``'s result."""
    lines = [
        f"{report['file']}",
        f"valid slices: {report['valid_slices']}/{report['slices']}"
        f" (anatomical validity {report['anatomical_validity']:.3f})",
        "",
        f"{'slice':>5}  {'valid':<5}  failed criteria",
    ]
    for row in report["per_slice"]:
        failed = ", ".join(row["failed"]) or "-"
        lines.append(f"{row['slice']:>5}  {'yes' if row['valid'] else 'NO':<5}  {failed}")
    errors = {name: n for name, n in report["errors_per_criterion"].items() if n}
    if errors:
        lines += ["", "errors per criterion:"]
        lines += [f"  {name}: {n}" for name, n in errors.items()]
    return "\n".join(lines)
