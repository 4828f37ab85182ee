"""LGG reader on the real Kaggle zip and on extracted / re-zipped copies of it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from seglab.data.lgg import open_lgg
from seglab.errors import DataError

pytestmark = pytest.mark.realdata

SMALL = "TCGA_CS_4941_19960909"  # 23 slices, the smallest case
OTHER = "TCGA_CS_6188_20010812"  # 24 slices


def extract(archive: Path, dest: Path, cases: list[str]) -> Path:
    """Extract data.csv, README.md and the given cases; returns the ``kaggle_3m`` folder."""
    with zipfile.ZipFile(archive) as zf:
        wanted = [
            n
            for n in zf.namelist()
            if n in ("kaggle_3m/data.csv", "kaggle_3m/README.md")
            or any(n.startswith(f"kaggle_3m/{case}/") for case in cases)
        ]
        zf.extractall(dest, members=wanted)
    return dest / "kaggle_3m"


def rezip(folder: Path, archive: Path, prefix: str) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


def test_real_zip_lists_13_cases_and_518_slices(lgg_real_zip: Path) -> None:
    with open_lgg(lgg_real_zip) as ds:
        assert ds.root == lgg_real_zip
        assert len(ds.patients) == 13
        assert sum(len(p.slice_numbers) for p in ds.patients) == 518
        assert ds.patients[0].id == SMALL
        assert ds.problems == []
        assert len(ds.table) == 13
        assert set(ds.table["Patient"]) == {p.id.rsplit("_", 1)[0] for p in ds.patients}


def test_slices_in_numeric_order(lgg_real_zip: Path) -> None:
    with open_lgg(lgg_real_zip) as ds:
        numbers = ds.patient(SMALL).slice_numbers
    assert numbers == tuple(range(1, 24))
    assert numbers.index(10) == numbers.index(9) + 1  # not 1, 10, 11, ..., 2


def test_load_one_case(lgg_real_zip: Path) -> None:
    with open_lgg(lgg_real_zip) as ds:
        volume = ds.load(SMALL)
        image9, mask9 = ds.load_slice(SMALL, 9)
    assert volume.patient == SMALL and volume.slice_numbers == tuple(range(1, 24))
    assert volume.image.shape == (23, 256, 256, 3) and volume.image.dtype == np.uint8
    assert volume.mask.shape == (23, 256, 256) and volume.mask.dtype == np.uint8
    assert set(np.unique(volume.mask).tolist()) == {0, 1}
    tumour = volume.mask.any(axis=(1, 2))
    assert tumour.any() and not tumour.all()  # empty-mask slices are kept
    assert np.array_equal(volume.image[8], image9) and np.array_equal(volume.mask[8], mask9)
    assert volume.image[..., 1].max() > 0  # FLAIR channel carries signal


@pytest.mark.parametrize("sub", ["kaggle_3m", ""])
def test_extracted_folder_matches_zip(lgg_real_zip: Path, tmp_path: Path, sub: str) -> None:
    extract(lgg_real_zip, tmp_path, [SMALL, OTHER])
    with open_lgg(tmp_path / sub) as folder, open_lgg(lgg_real_zip) as zipped:
        assert [p.id for p in folder.patients] == [SMALL, OTHER]
        assert folder.patients[0] == zipped.patient(SMALL)
        assert len(folder.table) == 2
        a, b = folder.load(OTHER), zipped.load(OTHER)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("prefix", ["", "lgg-mri-segmentation/kaggle_3m/", "download/kaggle_3m/"])
def test_other_zip_layouts(lgg_real_zip: Path, tmp_path: Path, prefix: str) -> None:
    folder = extract(lgg_real_zip, tmp_path / "x", [SMALL])
    archive = rezip(folder, tmp_path / "lgg.zip", prefix)
    with open_lgg(archive) as ds:
        assert [p.id for p in ds.patients] == [SMALL]
        assert ds.load(SMALL).image.shape == (23, 256, 256, 3)


def test_kaggle_zip_with_duplicated_tree_reads_it_once(lgg_real_zip: Path, tmp_path: Path) -> None:
    """The real Kaggle download holds kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/."""
    folder = extract(lgg_real_zip, tmp_path / "x", [SMALL])
    archive = tmp_path / "lgg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            rel = file.relative_to(folder).as_posix()
            zf.write(file, f"kaggle_3m/{rel}")
            zf.write(file, f"lgg-mri-segmentation/kaggle_3m/{rel}")
    with open_lgg(archive) as ds:
        assert [p.id for p in ds.patients] == [SMALL]


def test_unknown_case(lgg_real_zip: Path) -> None:
    with open_lgg(lgg_real_zip) as ds, pytest.raises(DataError, match="no patient 'TCGA_X'"):
        ds.load("TCGA_X")
