from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seglab.data.store import (
    SliceSet,
    concat,
    end_weights,
    image_context,
    input_channels,
    load_split,
    neighbour_rows,
    save_split,
)
from seglab.errors import DataError


def _slices(n: int = 5) -> SliceSet:
    rng = np.random.default_rng(0)
    meta = pd.DataFrame(
        {
            "patient": [f"patient{i:03d}" for i in range(n)],
            "phase": ["ED"] * n,
            "slice_index": np.arange(n, dtype=np.int16),
        }
    )
    return SliceSet(
        image=rng.random((n, 8, 8), dtype=np.float32),
        label=rng.integers(0, 4, (n, 8, 8), dtype=np.uint8),
        meta=meta,
        extra={"pred_unet": rng.integers(0, 4, (n, 8, 8), dtype=np.uint8)},
    )


def test_round_trip(tmp_path: Path) -> None:
    original = _slices()
    save_split(tmp_path / "train.npz", original)
    loaded = load_split(tmp_path / "train.npz")
    np.testing.assert_array_equal(loaded.image, original.image)
    np.testing.assert_array_equal(loaded.label, original.label)
    np.testing.assert_array_equal(loaded.extra["pred_unet"], original.extra["pred_unet"])
    pd.testing.assert_frame_equal(loaded.meta, original.meta)
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]  # no temporary left behind


def test_length_mismatch_is_refused() -> None:
    s = _slices()
    with pytest.raises(ValueError, match="label has 4 slices"):
        SliceSet(image=s.image, label=s.label[:4], meta=s.meta)


def test_take_keeps_every_array_and_column_of_the_chosen_rows() -> None:
    s = _slices()
    for rows in (np.array([True, False, True, False, True]), np.array([4, 0, 2])):
        part = s.take(rows)
        picked = np.arange(5)[rows]
        assert part.meta["slice_index"].tolist() == picked.tolist()
        assert part.meta.index.tolist() == list(range(len(picked)))
        np.testing.assert_array_equal(part.image, s.image[picked])
        np.testing.assert_array_equal(part.label, s.label[picked])
        np.testing.assert_array_equal(part.extra["pred_unet"], s.extra["pred_unet"][picked])


def test_concat_puts_sets_one_after_another_and_refuses_mismatched_extras() -> None:
    s = _slices()
    both = concat([s.take(np.array([3, 4])), s.take(np.array([0]))])
    assert both.meta["slice_index"].tolist() == [3, 4, 0]
    assert both.meta.index.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(both.extra["pred_unet"], s.extra["pred_unet"][[3, 4, 0]])
    with pytest.raises(ValueError, match="different extra arrays"):
        concat([s, SliceSet(s.image, s.label, s.meta)])
    with pytest.raises(ValueError, match="nothing to concatenate"):
        concat([])


def test_missing_and_corrupt_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="prepared split not found"):
        load_split(tmp_path / "val.npz")
    bad = tmp_path / "test.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="test.npz: not a readable prepared split"):
        load_split(bad)


def _volumes(order: list[tuple[str, int]], count: int = 3) -> SliceSet:
    """Slices given as (patient, slice_index) in any order; image value = 10 * patient + z."""
    meta = pd.DataFrame(
        {"patient": [p for p, _ in order], "frame": 1, "slice_index": [z for _, z in order],
         "slice_count": count}
    )  # fmt: skip
    image = np.stack([np.full((2, 2), 10 * int(p[1:]) + z, np.float32) for p, z in order])
    return SliceSet(image, np.zeros(image.shape, np.uint8), meta)


def test_neighbours_stay_in_their_volume_whatever_the_row_order() -> None:
    slices = _volumes([("p2", 1), ("p1", 0), ("p2", 0), ("p1", 2), ("p1", 1), ("p2", 2)])
    assert neighbour_rows(slices.meta, offset=1).tolist() == [5, 4, 0, -1, 3, -1]
    assert neighbour_rows(slices.meta, offset=-1).tolist() == [2, -1, -1, 4, 1, 0]


def test_image_context_stacks_neighbours_with_zeros_beyond_the_volume() -> None:
    slices = _volumes([("p1", 1), ("p1", 0), ("p1", 2)])
    context = image_context(slices, 1)
    assert context.shape == (3, 3, 2, 2) and context.dtype == np.float32
    assert context[:, :, 0, 0].tolist() == [[10, 11, 12], [0, 10, 11], [11, 12, 0]]
    wide = image_context(slices, 2)[:, :, 0, 0]
    assert wide.tolist() == [[0, 10, 11, 12, 0], [0, 0, 10, 11, 12], [10, 11, 12, 0, 0]]
    assert (image_context(slices, 0)[:, 0] == slices.image).all()


def test_the_place_in_the_stack_is_a_last_constant_channel() -> None:
    slices = _volumes([("p1", 1), ("p1", 0), ("p1", 2)])
    placed = image_context(slices, 1, position=True)
    assert placed.shape == (3, 4, 2, 2) and placed.dtype == np.float32
    assert (placed[:, :3] == image_context(slices, 1)).all()
    assert placed[:, 3].tolist() == [[[0.5] * 2] * 2, [[0.0] * 2] * 2, [[1.0] * 2] * 2]
    single = _volumes([("p1", 0)], count=1)
    assert image_context(single, 0, position=True)[:, 1].tolist() == [[[0.0] * 2] * 2]


@pytest.mark.parametrize("context", [0, 1, 2])
@pytest.mark.parametrize("position", [False, True])
def test_input_channels_counts_what_image_context_builds(context: int, position: bool) -> None:
    slices = _volumes([("p1", 1), ("p1", 0), ("p1", 2)])
    assert image_context(slices, context, position).shape[1] == input_channels(context, position)


def test_a_gap_or_a_repeated_slice_is_refused() -> None:
    with pytest.raises(DataError, match="volume has no slice"):
        neighbour_rows(_volumes([("p1", 0), ("p1", 2)]).meta)
    with pytest.raises(DataError, match="slice given twice"):
        neighbour_rows(_volumes([("p1", 0), ("p1", 0), ("p1", 1)]).meta)


def test_end_weights_mark_the_two_outermost_slices_of_each_stack() -> None:
    meta = pd.DataFrame(
        {"slice_index": [0, 1, 2, 3, 4, 5, 0, 1, 2], "slice_count": [6] * 6 + [3] * 3}
    )
    weights = end_weights(meta, 2.5)
    assert weights.tolist() == [2.5, 2.5, 1.0, 1.0, 2.5, 2.5, 2.5, 2.5, 2.5]
    assert end_weights(meta, 2.5, ends=1).tolist() == [2.5, 1, 1, 1, 1, 2.5, 2.5, 1, 2.5]
