"""`seglab data check`: identification, summaries, the CLI, and full passes over the real data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from seglab.cli import main
from seglab.data.check import check_path
from seglab.data.phantom.lgg import write_lgg_phantom

TRAINING = Path("database") / "training"
LGG_CASE = "TCGA_CS_4941_19960909"


def copy_patients(acdc_real: Path, dest: Path, ids: list[str]) -> Path:
    for pid in ids:
        (dest / pid).mkdir(parents=True)
        for src in (acdc_real / TRAINING / pid).iterdir():
            shutil.copyfile(src, dest / pid / src.name)
    return dest


def lgg_case_zip(lgg_real_zip: Path, archive: Path) -> Path:
    """A one-case copy of the Kaggle zip, same layout."""
    with zipfile.ZipFile(lgg_real_zip) as src, zipfile.ZipFile(archive, "w") as dst:
        for name in src.namelist():
            if name == "kaggle_3m/data.csv" or name.startswith(f"kaggle_3m/{LGG_CASE}/"):
                dst.writestr(name, src.read(name))
    return archive


@pytest.mark.realdata
def test_acdc_subset_report(acdc_real: Path, tmp_path: Path) -> None:
    folder = copy_patients(acdc_real, tmp_path / "acdc", ["patient001", "patient081", "patient090"])
    report = check_path(folder)
    assert (report.kind, report.ok, report.problems) == ("acdc", True, [])
    s = report.summary
    assert s["patients"] == 3 and s["frames_ok"] == 6
    assert s["groups"] == {"DCM": 1, "RV": 2}
    assert s["subsets"] == {"(plain folder)": 3}
    assert s["ed_not_frame_1"] == ["patient090 (ED 4)"]
    assert s["slices"] == {"min": 7, "max": 17}  # patient090 has 7, patient081 17
    assert 5.0 in s["slice_spacing_mm"] and 10.0 in s["slice_spacing_mm"]
    assert s["label_values"] == [0, 1, 2, 3]
    row = {r["id"]: r for r in report.table}["patient001"]
    assert row == {
        "id": "patient001",
        "subset": "",
        "group": "DCM",
        "ed": 1,
        "es": 12,
        "nb_frame": 30,
        "shape": [216, 256, 10],
        "spacing": [1.5625, 1.5625, 10.0],
        "dtype": "int16",
    }
    assert json.loads(json.dumps(report.to_dict()))["patients"][0]["id"] == "patient001"
    text = report.render()
    assert text.splitlines()[0] == f"ACDC dataset at {folder}: OK"
    assert "DCM: 1, RV: 2" in text


@pytest.mark.realdata
def test_lgg_one_case_report(lgg_real_zip: Path, tmp_path: Path) -> None:
    report = check_path(lgg_case_zip(lgg_real_zip, tmp_path / "lgg.zip"))
    assert (report.kind, report.ok, report.problems) == ("lgg", True, [])
    s = report.summary
    assert (s["patients"], s["slices"], s["data_csv_rows"]) == (1, 23, 1)
    assert 0 < s["slices_with_tumour"] < 23
    assert s["slices_with_tumour"] + s["slices_empty_mask"] == 23
    assert s["image_shapes"] == ["256x256x3"] and s["mask_values"] == [0, 255]
    assert report.table == [
        {
            "id": LGG_CASE,
            "slices": 23,
            "tumour_slices": s["slices_with_tumour"],
            "slice_numbers": "1..23",
        }
    ]
    assert "LGG dataset at" in report.render()


@pytest.mark.realdata
def test_all_problems_are_listed(acdc_real: Path, tmp_path: Path) -> None:
    folder = copy_patients(acdc_real, tmp_path / "acdc", ["patient001", "patient002", "patient003"])
    (folder / "patient001" / "patient001_frame12_gt.nii.gz").unlink()
    (folder / "patient002" / "Info.cfg").unlink()
    report = check_path(folder)
    assert not report.ok and report.kind == "acdc"
    assert len(report.problems) == 2
    assert any(
        "patient001_frame12_gt.nii.gz: missing ES ground truth" in p for p in report.problems
    )
    assert any("patient002/Info.cfg: missing Info.cfg" in p for p in report.problems)
    assert report.summary["frames_ok"] == 3  # patient001 ED and patient003 both
    assert "problems:" in report.render()


def test_unknown_folder_is_a_report_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    report = check_path(tmp_path)
    assert (report.kind, report.ok) == ("unknown", False)
    assert report.problems == [
        f"{tmp_path}: neither ACDC (not an ACDC dataset: no patientNNN folders (looked for "
        "database/training, database/testing, training, testing and the folder itself)) nor LGG "
        "(not an LGG dataset: no TCGA_<inst>_<id>_<date> case folders (expected "
        "kaggle_3m/TCGA_.../ as in the Kaggle archive))"
    ]
    missing = check_path(tmp_path / "nope")
    assert missing.problems == [f"{tmp_path / 'nope'}: does not exist"]
    assert json.dumps(missing.to_dict())


@pytest.mark.realdata
def test_cli_json_on_a_subset(acdc_real: Path, tmp_path: Path, capsys) -> None:
    folder = copy_patients(acdc_real, tmp_path / "acdc", ["patient001"])
    assert main(["data", "check", str(folder), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kind"], out["ok"], out["summary"]["patients"]) == ("acdc", True, 1)


# --- full passes over the real data -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.realdata
def test_full_acdc_check_end_to_end(acdc_real: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "seglab.cli", "data", "check", str(acdc_real), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert (out["kind"], out["ok"], out["problems"]) == ("acdc", True, [])
    s = out["summary"]
    assert s["patients"] == 100 and s["frames_ok"] == 200
    assert s["subsets"] == {"training": 100}
    assert s["groups"] == {g: 20 for g in ("DCM", "HCM", "MINF", "NOR", "RV")}
    assert "patient090 (ED 4)" in s["ed_not_frame_1"]
    assert s["slices"] == {"min": 6, "max": 18}
    assert s["slice_spacing_mm"] == [5.0, 6.5, 7.0, 10.0]
    assert 0.70 <= s["in_plane_spacing_mm"]["min"] < 0.71
    assert 1.91 < s["in_plane_spacing_mm"]["max"] <= 1.92
    assert s["label_values"] == [0, 1, 2, 3]
    assert s["image_dtypes"] == ["float32", "int16", "uint8"]
    rows = {r["id"]: r for r in out["patients"]}
    p1 = rows["patient001"]
    assert (p1["shape"], p1["spacing"]) == ([216, 256, 10], [1.5625, 1.5625, 10.0])
    assert (p1["ed"], p1["es"], p1["group"]) == (1, 12, "DCM")
    assert (rows["patient090"]["ed"], rows["patient090"]["es"]) == (4, 11)
    assert rows["patient081"]["shape"][2] == 17 and rows["patient081"]["spacing"][2] == 5.0


@pytest.mark.slow
@pytest.mark.realdata
def test_full_lgg_check(lgg_real_zip: Path, capsys) -> None:
    assert main(["data", "check", str(lgg_real_zip), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kind"], out["ok"]) == ("lgg", True)
    s = out["summary"]
    assert (s["patients"], s["slices"], s["data_csv_rows"]) == (13, 518, 13)
    assert s["slices_with_tumour"] == 202 and s["slices_empty_mask"] == 316
    assert s["mask_values"] == [0, 255] and s["image_shapes"] == ["256x256x3"]
    assert s["without_data_csv_row"] == []


# --- LGG phantoms: data.csv rows without a case, unreadable slices ---------------------------


def test_lgg_data_csv_rows_without_a_case_are_reported(tmp_path: Path) -> None:
    write_lgg_phantom(tmp_path / "lgg", patients=2, seed=0)
    table = tmp_path / "lgg" / "kaggle_3m" / "data.csv"
    rows = table.read_text().splitlines()
    extra = [
        rows[1].replace(rows[1].split(",")[0], key) for key in ("TCGA_ZZ_0001", "TCGA_ZZ_0002")
    ]
    table.write_text("\n".join([*rows, *extra]) + "\n")
    report = check_path(tmp_path / "lgg")
    s = report.summary
    assert (s["patients"], s["data_csv_rows"]) == (2, 2)
    assert s["data_csv_rows_without_case"] == ["TCGA_ZZ_0001", "TCGA_ZZ_0002"]
    assert "data csv rows without case  TCGA_ZZ_0001, TCGA_ZZ_0002" in report.render()


def test_an_unreadable_tif_is_named_not_shown_as_a_python_object(tmp_path: Path) -> None:
    write_lgg_phantom(tmp_path / "lgg", patients=1, seed=0)
    case = next((tmp_path / "lgg" / "kaggle_3m").glob("TCGA_*"))
    bad = case / f"{case.name}_1.tif"
    bad.write_bytes(b"not a TIFF at all")
    report = check_path(tmp_path / "lgg")
    assert not report.ok
    assert report.problems == [f"{bad}: unreadable TIFF (cannot identify image file '{bad.name}')"]
    assert "object at 0x" not in report.render()
