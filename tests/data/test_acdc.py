"""ACDC reader on the real files: every accepted layout, a zip, Info.cfg parsing."""

from __future__ import annotations

import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from seglab.data.acdc import (
    LABELS,
    PHASES,
    AcdcInfo,
    open_acdc,
    parse_info,
)
from seglab.errors import DataError

INFO_090 = "ED: 4\nES: 11\nGroup: RV\nHeight: 150.0\nNbFrame: 12\nWeight: 66.0\n"


def copy_patients(acdc_real: Path, dest: Path, ids: list[str]) -> Path:
    """Writable copies of real patient folders (the shared copy is read-only)."""
    for pid in ids:
        (dest / pid).mkdir(parents=True)
        for src in (acdc_real / "database" / "training" / pid).iterdir():
            shutil.copyfile(src, dest / pid / src.name)
    return dest


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    """Zip every file under ``folder`` with member names ``prefix + relative path``."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(folder).as_posix())
    return archive


# --- Info.cfg ---------------------------------------------------------------------------


def test_parse_info_reads_every_key() -> None:
    info = parse_info(INFO_090, "Info.cfg")
    assert info == AcdcInfo(ed=4, es=11, group="RV", height=150.0, weight=66.0, nb_frame=12)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (INFO_090.replace("Group: RV\n", ""), "missing key Group"),
        (INFO_090.replace("ED: 4\nES: 11\n", ""), "missing keys ED, ES"),
        (INFO_090.replace("Group: RV", "Group: XYZ"), "Group 'XYZ' is not one of"),
        (INFO_090.replace("ES: 11", "ES: 13"), "ES 13 is outside 1..NbFrame (12)"),
        (INFO_090.replace("ED: 4", "ED: 0"), "ED 0 is outside 1..NbFrame (12)"),
        (INFO_090.replace("NbFrame: 12", "NbFrame: twelve"), "NbFrame 'twelve' is not an integer"),
        (INFO_090.replace("Height: 150.0", "Height: tall"), "Height 'tall' is not a number"),
        (INFO_090 + "garbage line\n", "line 7: expected 'Key: value'"),
    ],
)
def test_parse_info_rejects_bad_content(text: str, problem: str) -> None:
    with pytest.raises(DataError) as err:
        parse_info(text, "some/Info.cfg")
    assert str(err.value).startswith("some/Info.cfg: ")
    assert problem in str(err.value)


# --- the real dataset, official layout --------------------------------------------------


@pytest.mark.realdata
def test_official_layout_lists_all_patients(acdc_real: Path) -> None:
    with open_acdc(acdc_real) as ds:
        ids = [p.id for p in ds.patients]
        assert ids == [f"patient{n:03d}" for n in range(1, 101)]
        assert Counter(p.info.group for p in ds.patients) == {
            g: 20 for g in ("NOR", "MINF", "DCM", "HCM", "RV")
        }
        assert {p.subset for p in ds.patients} == {"training"}
        assert ds.problems == []


@pytest.mark.realdata
def test_patient001_checked_facts(acdc_real: Path) -> None:
    with open_acdc(acdc_real) as ds:
        patient = ds.patient("patient001")
        assert (patient.info.ed, patient.info.es, patient.info.group) == (1, 12, "DCM")
        ed = ds.load("patient001", "ED")
        es = ds.load("patient001", "ES")
    assert (ed.frame, es.frame) == (1, 12)
    for frame in (ed, es):
        assert frame.image.shape == (216, 256, 10) == frame.label.shape
        assert frame.spacing == (1.5625, 1.5625, 10.0)
        assert frame.image.dtype == np.float32 and frame.label.dtype == np.uint8
        assert frame.affine.shape == (4, 4) and frame.affine.dtype == np.float64
        assert set(np.unique(frame.label).tolist()) == set(LABELS)
        assert frame.image.max() > 0
    assert ed.stored_dtype == "int16"


@pytest.mark.realdata
def test_ed_is_not_always_frame_1(acdc_real: Path) -> None:
    with open_acdc(acdc_real / "database") as ds:
        info = ds.patient("patient090").info
        assert (info.ed, info.es, info.nb_frame) == (4, 11, 12)
        assert ds.load("patient090", "ED").frame == 4
        assert ds.load("patient090", "ES").frame == 11


@pytest.mark.realdata
def test_patient081_has_17_slices_of_5mm(acdc_real: Path) -> None:
    with open_acdc(acdc_real / "database" / "training") as ds:
        frame = ds.load("patient081", "ES")
    assert frame.image.shape[2] == 17
    assert frame.spacing[2] == 5.0


@pytest.mark.realdata
@pytest.mark.parametrize("sub", ["", "database", "database/training"])
def test_every_level_of_the_official_layout(acdc_real: Path, sub: str) -> None:
    with open_acdc(acdc_real / sub) as ds:
        assert len(ds.patients) == 100
        assert ds.patients[0].subset == "training"


@pytest.mark.realdata
def test_unknown_patient_and_phase(acdc_real: Path) -> None:
    with open_acdc(acdc_real) as ds:
        with pytest.raises(DataError, match="no patient 'patient999'"):
            ds.load("patient999", "ED")
        with pytest.raises(ValueError, match="phase"):
            ds.load("patient001", "MID")


# --- subsets and copies -----------------------------------------------------------------


@pytest.mark.realdata
def test_plain_folder_of_a_few_patients(acdc_real: Path, tmp_path: Path) -> None:
    folder = copy_patients(acdc_real, tmp_path / "mine", ["patient090", "patient001"])
    with open_acdc(folder) as ds:
        assert [(p.id, p.subset) for p in ds.patients] == [("patient001", ""), ("patient090", "")]
        assert ds.load("patient090", "ED").frame == 4


@pytest.mark.realdata
def test_training_and_testing_subsets(acdc_real: Path, tmp_path: Path) -> None:
    db = tmp_path / "acdc" / "database"
    copy_patients(acdc_real, db / "training", ["patient001"])
    copy_patients(acdc_real, db / "testing", ["patient002"])
    for path in (tmp_path / "acdc", db):
        with open_acdc(path) as ds:
            assert [(p.id, p.subset) for p in ds.patients] == [
                ("patient001", "training"),
                ("patient002", "testing"),
            ]
    with open_acdc(db / "testing") as ds:
        assert [(p.id, p.subset) for p in ds.patients] == [("patient002", "testing")]


@pytest.mark.realdata
@pytest.mark.parametrize(
    "prefix", ["", "database/training/", "ACDC/database/training/", "training/", "data/"]
)
def test_zip_matches_folder(acdc_real: Path, tmp_path: Path, prefix: str) -> None:
    folder = copy_patients(acdc_real, tmp_path / "plain", ["patient001", "patient090"])
    archive = zip_folder(folder, tmp_path / "acdc.zip", prefix)
    expected_subset = "training" if "training" in prefix else ""
    with open_acdc(folder) as plain, open_acdc(archive) as zipped:
        assert zipped.root == archive
        assert [p.id for p in zipped.patients] == ["patient001", "patient090"]
        assert {p.subset for p in zipped.patients} == {expected_subset}
        for phase in PHASES:
            a = plain.load("patient090", phase)
            b = zipped.load("patient090", phase)
            assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
            assert a.spacing == b.spacing and np.array_equal(a.affine, b.affine)
    assert sorted(tmp_path.iterdir()) == [archive, tmp_path / "plain"]  # nothing extracted


@pytest.mark.realdata
def test_close_releases_the_zip(acdc_real: Path, tmp_path: Path) -> None:
    folder = copy_patients(acdc_real, tmp_path / "plain", ["patient001"])
    ds = open_acdc(zip_folder(folder, tmp_path / "acdc.zip"))
    ds.close()
    ds.close()  # idempotent
    with pytest.raises(ValueError):
        ds.load("patient001", "ED")
