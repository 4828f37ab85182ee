"""Bad input stops with one line naming the file and the problem, never a traceback.

Each case breaks a writable copy of one or two real patients in tmp_path, then checks both the
strict readers (DataError) and `seglab data check` (non-zero exit, the line in its output).
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from seglab.cli import main
from seglab.data.acdc import PHASES, open_acdc
from seglab.data.lgg import open_lgg
from seglab.errors import DataError

pytestmark = pytest.mark.realdata

P1 = "patient001"  # ED frame01, ES frame12, (216, 256, 10)
CASE = "TCGA_CS_4941_19960909"  # 23 slices


# --- helpers --------------------------------------------------------------------------------


def check_reports(path: Path, capsys: pytest.CaptureFixture[str], file: str, problem: str) -> None:
    """`seglab data check PATH` exits non-zero with ``file`` and ``problem`` on one line."""
    code = main(["data", "check", str(path)])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code != 0
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if file in line and problem in line]
    assert lines, f"no line with {file!r} and {problem!r} in:\n{text}"


def read_all_acdc(path: Path) -> None:
    with open_acdc(path) as ds:
        for patient in ds.patients:
            for phase in PHASES:
                ds.load(patient.id, phase)


def read_all_lgg(path: Path) -> None:
    with open_lgg(path) as ds:
        for patient in ds.patients:
            ds.load(patient.id)


def zip_tree(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(folder).as_posix())
    return archive


@pytest.fixture
def acdc_copy(acdc_real: Path, tmp_path: Path) -> Path:
    """database/training/{patient001, patient002}, writable."""
    training = tmp_path / "acdc" / "database" / "training"
    for pid in (P1, "patient002"):
        (training / pid).mkdir(parents=True)
        for src in (acdc_real / "database" / "training" / pid).iterdir():
            shutil.copyfile(src, training / pid / src.name)
    return tmp_path / "acdc"


@pytest.fixture
def lgg_copy(lgg_real_zip: Path, tmp_path: Path) -> Path:
    """kaggle_3m/ with data.csv and one case, extracted and writable."""
    with zipfile.ZipFile(lgg_real_zip) as zf:
        names = [
            n
            for n in zf.namelist()
            if n == "kaggle_3m/data.csv" or n.startswith(f"kaggle_3m/{CASE}/")
        ]
        zf.extractall(tmp_path / "lgg", members=names)
    return tmp_path / "lgg"


def p1_file(root: Path, name: str) -> Path:
    return root / "database" / "training" / P1 / name


def rewrite_nifti(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace a NIfTI's voxels by ``change(voxels)``, keeping its affine and zooms."""
    old = nib.load(path)
    data = change(np.asanyarray(old.dataobj))
    new = nib.Nifti1Image(data, old.affine)
    new.header.set_zooms(old.header.get_zooms()[: data.ndim] + (1.0,) * (data.ndim - 3))
    new.set_data_dtype(data.dtype)
    nib.save(new, path)


def set_voxel(value: float, dtype: type) -> Callable[[np.ndarray], np.ndarray]:
    def change(array: np.ndarray) -> np.ndarray:
        out = array.astype(dtype)
        out[100, 100, 5] = value
        return out

    return change


def case_file(root: Path, name: str) -> Path:
    return root / "kaggle_3m" / CASE / f"{CASE}_{name}.tif"


# --- ACDC -----------------------------------------------------------------------------------


ACDC_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (break the copy, file named in the message, problem)
    "missing ground truth": (
        lambda r: p1_file(r, f"{P1}_frame01_gt.nii.gz").unlink(),
        f"{P1}_frame01_gt.nii.gz",
        "missing ED ground truth (frame 1)",
    ),
    "missing image": (
        lambda r: p1_file(r, f"{P1}_frame12.nii.gz").unlink(),
        f"{P1}_frame12.nii.gz",
        "missing ES image (frame 12)",
    ),
    "truncated nii.gz": (
        lambda r: (f := p1_file(r, f"{P1}_frame12.nii.gz")).write_bytes(f.read_bytes()[:20000]),
        f"{P1}_frame12.nii.gz",
        "corrupt or truncated NIfTI",
    ),
    "not gzip at all": (
        lambda r: p1_file(r, f"{P1}_frame01_gt.nii.gz").write_bytes(b"not a nifti" * 50),
        f"{P1}_frame01_gt.nii.gz",
        "corrupt or truncated NIfTI",
    ),
    "label 7": (
        lambda r: rewrite_nifti(p1_file(r, f"{P1}_frame01_gt.nii.gz"), set_voxel(7, np.uint8)),
        f"{P1}_frame01_gt.nii.gz",
        "label values must be in 0..3 (background, RV, MYO, LV), found 7",
    ),
    "non-integer label": (
        lambda r: rewrite_nifti(p1_file(r, f"{P1}_frame12_gt.nii.gz"), set_voxel(1.5, np.float32)),
        f"{P1}_frame12_gt.nii.gz",
        "label values must be integers 0..3, found 1.5",
    ),
    "mask of another shape": (
        lambda r: rewrite_nifti(p1_file(r, f"{P1}_frame01_gt.nii.gz"), lambda a: a[:, :-6]),
        f"{P1}_frame01_gt.nii.gz",
        "mask shape (216, 250, 10) differs from image shape (216, 256, 10)",
    ),
    "4D image": (
        lambda r: rewrite_nifti(p1_file(r, f"{P1}_frame01.nii.gz"), lambda a: a[..., None]),
        f"{P1}_frame01.nii.gz",
        "expected a 3D image (x, y, z), got shape (216, 256, 10, 1)",
    ),
    "Info.cfg key dropped": (
        lambda r: (f := p1_file(r, "Info.cfg")).write_text(
            "".join(line for line in f.read_text().splitlines(True) if "Group" not in line)
        ),
        f"{P1}/Info.cfg",
        "missing key Group",
    ),
    "Info.cfg missing": (
        lambda r: p1_file(r, "Info.cfg").unlink(),
        f"{P1}/Info.cfg",
        "missing Info.cfg",
    ),
    "Info.cfg ES beyond NbFrame": (
        lambda r: (f := p1_file(r, "Info.cfg")).write_text(
            f.read_text().replace("ES: 12", "ES: 31")
        ),
        f"{P1}/Info.cfg",
        "ES 31 is outside 1..NbFrame (30)",
    ),
}


@pytest.mark.parametrize("case", list(ACDC_CASES))
def test_acdc_bad_file(acdc_copy: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    breaker, file, problem = ACDC_CASES[case]
    breaker(acdc_copy)
    with pytest.raises(DataError) as err:
        read_all_acdc(acdc_copy)
    assert file in err.value.path and problem in err.value.problem
    check_reports(acdc_copy, capsys, file, problem)


def test_acdc_bad_file_inside_a_zip(acdc_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rewrite_nifti(p1_file(acdc_copy, f"{P1}_frame01_gt.nii.gz"), set_voxel(7, np.uint8))
    archive = zip_tree(acdc_copy, acdc_copy.parent / "acdc.zip")
    member = f"acdc.zip/database/training/{P1}/{P1}_frame01_gt.nii.gz"
    check_reports(archive, capsys, member, "found 7")


def test_zip_member_with_bad_crc(acdc_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = zip_tree(acdc_copy, acdc_copy.parent / "acdc.zip")
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(f"database/training/{P1}/{P1}_frame12.nii.gz")
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 5000 : start + 5016] = bytes(16)
    archive.write_bytes(bytes(data))
    check_reports(archive, capsys, f"{P1}_frame12.nii.gz", "cannot read file (Bad CRC-32")


# --- not a dataset at all -------------------------------------------------------------------


def test_zip_of_unrelated_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "holiday.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("photos/beach.txt", "sand")
        zf.writestr("notes.md", "# notes")
    for opener in (open_acdc, open_lgg):
        with pytest.raises(DataError, match="not an (ACDC|LGG) dataset"):
            opener(archive)
    check_reports(archive, capsys, "holiday.zip", "neither ACDC (not an ACDC dataset")
    check_reports(archive, capsys, "holiday.zip", "nor LGG (not an LGG dataset")


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        open_acdc(tmp_path / "empty")
    check_reports(tmp_path / "empty", capsys, str(tmp_path / "empty"), "empty folder")


def test_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    check_reports(tmp_path / "nowhere", capsys, str(tmp_path / "nowhere"), "does not exist")


def test_truncated_zip(acdc_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = zip_tree(acdc_copy, acdc_copy.parent / "acdc.zip")
    archive.write_bytes(archive.read_bytes()[:100000])
    check_reports(archive, capsys, "acdc.zip", "corrupt or truncated zip archive")


def test_plain_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    check_reports(tmp_path / "data.csv", capsys, "data.csv", "neither a folder nor a zip")


# --- LGG ------------------------------------------------------------------------------------


def write_tif(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="TIFF")


def mask_with_128(root: Path) -> None:
    mask = np.zeros((256, 256), np.uint8)
    mask[10:20, 10:20] = 128
    write_tif(case_file(root, "3_mask"), mask)


LGG_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "missing mask": (
        lambda r: case_file(r, "5_mask").unlink(),
        f"{CASE}_5_mask.tif",
        "missing mask for slice 5",
    ),
    "mask without slice": (
        lambda r: case_file(r, "7").unlink(),
        f"{CASE}_7.tif",
        "missing image for slice 7",
    ),
    "mask value 128": (
        mask_with_128,
        f"{CASE}_3_mask.tif",
        "mask values must be 0 or 255, found 128",
    ),
    "truncated tif": (
        lambda r: (f := case_file(r, "12")).write_bytes(f.read_bytes()[:1000]),
        f"{CASE}_12.tif",
        "unreadable TIFF",
    ),
    "grey slice": (
        lambda r: write_tif(case_file(r, "2"), np.zeros((256, 256), np.uint8)),
        f"{CASE}_2.tif",
        "expected an RGB image (H, W, 3), got shape (256, 256)",
    ),
    "16-bit mask": (
        lambda r: write_tif(case_file(r, "4_mask"), np.zeros((256, 256), np.uint16)),
        f"{CASE}_4_mask.tif",
        "expected 8-bit pixels",
    ),
    "mask of another shape": (
        lambda r: write_tif(case_file(r, "9_mask"), np.zeros((128, 128), np.uint8)),
        f"{CASE}_9_mask.tif",
        "mask shape (128, 128) differs from image shape (256, 256)",
    ),
    "missing data.csv": (
        lambda r: (r / "kaggle_3m" / "data.csv").unlink(),
        "kaggle_3m/data.csv",
        "missing data.csv",
    ),
}


@pytest.mark.parametrize("case", list(LGG_CASES))
def test_lgg_bad_file(lgg_copy: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    breaker, file, problem = LGG_CASES[case]
    breaker(lgg_copy)
    with pytest.raises(DataError) as err:
        read_all_lgg(lgg_copy)
    assert file in err.value.path and problem in err.value.problem
    check_reports(lgg_copy, capsys, file, problem)


def test_lgg_slice_of_another_size(lgg_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tif(case_file(lgg_copy, "6"), np.zeros((128, 128, 3), np.uint8))
    write_tif(case_file(lgg_copy, "6_mask"), np.zeros((128, 128), np.uint8))
    problem = "shape (128, 128, 3) differs from slice 1 (256, 256, 3)"
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_all_lgg(lgg_copy)
    check_reports(lgg_copy, capsys, f"{CASE}_6.tif", problem)


def test_lgg_bad_mask_inside_a_zip(lgg_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask_with_128(lgg_copy)
    archive = zip_tree(lgg_copy, lgg_copy.parent / "lgg.zip")
    member = f"lgg.zip/kaggle_3m/{CASE}/{CASE}_3_mask.tif"
    check_reports(archive, capsys, member, "found 128")


def test_every_bad_slice_is_listed(lgg_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask_with_128(lgg_copy)
    write_tif(case_file(lgg_copy, "2"), np.zeros((256, 256), np.uint8))
    check_reports(lgg_copy, capsys, f"{CASE}_3_mask.tif", "found 128")
    check_reports(lgg_copy, capsys, f"{CASE}_2.tif", "expected an RGB image")
