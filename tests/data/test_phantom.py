"""Generated phantoms: real layout, anatomically valid masks, group differences, determinism."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from seglab.data.phantom.acdc import GROUPS, SLICE_THICKNESS_MM, write_acdc_phantom
from seglab.data.phantom.lgg import CSV_COLUMNS, write_lgg_phantom
from seglab.errors import SeglabError

EIGHT = np.ones((3, 3), dtype=bool)
ACDC_PATIENTS = 5
LGG_PATIENTS = 2


@pytest.fixture(scope="module")
def acdc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "acdc"
    write_acdc_phantom(out, ACDC_PATIENTS, seed=0)
    return out


@pytest.fixture(scope="module")
def lgg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "lgg"
    write_lgg_phantom(out, LGG_PATIENTS, seed=0)
    return out


def _info(folder: Path) -> dict[str, str]:
    lines = (folder / "Info.cfg").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines)


def _frames(acdc_dir: Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, tuple]]]:
    """patient -> phase -> (image, label, zooms), read back with nibabel."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray, tuple]]] = {}
    for folder in sorted((acdc_dir / "database" / "training").iterdir()):
        info = _info(folder)
        out[folder.name] = {}
        for phase in ("ED", "ES"):
            stem = folder / f"{folder.name}_frame{int(info[phase]):02d}"
            image = nib.load(f"{stem}.nii.gz")
            label = nib.load(f"{stem}_gt.nii.gz")
            out[folder.name][phase] = (
                np.asarray(image.dataobj),
                np.asarray(label.dataobj),
                tuple(float(z) for z in image.header.get_zooms()),
            )
    return out


@pytest.fixture(scope="module")
def acdc_frames(acdc_dir: Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, tuple]]]:
    return _frames(acdc_dir)


def _groups(acdc_dir: Path) -> dict[str, str]:
    folders = sorted((acdc_dir / "database" / "training").iterdir())
    return {_info(f)["Group"]: f.name for f in folders}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --- ACDC: layout and headers --------------------------------------------------------------


def test_acdc_layout_and_info(acdc_dir: Path) -> None:
    training = acdc_dir / "database" / "training"
    folders = sorted(p.name for p in training.iterdir())
    assert folders == [f"patient{i:03d}" for i in range(1, ACDC_PATIENTS + 1)]
    groups = []
    for name in folders:
        folder = training / name
        info = _info(folder)
        assert list(info) == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        ed, es, frames = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
        assert 1 <= ed < es <= frames and 20 <= frames <= 30
        assert 140 <= float(info["Height"]) <= 200 and 40 <= float(info["Weight"]) <= 120
        groups.append(info["Group"])
        expected = {
            "Info.cfg",
            "MANDATORY_CITATION.md",
            f"{name}_frame{ed:02d}.nii.gz",
            f"{name}_frame{ed:02d}_gt.nii.gz",
            f"{name}_frame{es:02d}.nii.gz",
            f"{name}_frame{es:02d}_gt.nii.gz",
        }
        assert {p.name for p in folder.iterdir()} == expected
        assert "generated" in (folder / "MANDATORY_CITATION.md").read_text().lower()
    assert groups == list(GROUPS)  # cycling, so every group is present from 5 patients


def test_acdc_volumes_have_real_geometry(acdc_frames: dict) -> None:
    dtypes = set()
    for phases in acdc_frames.values():
        (ed_image, ed_label, zooms), (es_image, es_label, es_zooms) = phases["ED"], phases["ES"]
        assert zooms == es_zooms and ed_image.shape == es_image.shape == ed_label.shape
        nx, ny, nz = ed_image.shape
        assert 160 <= nx <= 256 and 160 <= ny <= 256 and 6 <= nz <= 18
        assert zooms[0] == zooms[1] and 1.25 <= zooms[0] <= 1.8
        assert zooms[2] in SLICE_THICKNESS_MM
        for label in (ed_label, es_label):
            assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 3}
            assert {1, 2, 3} <= set(np.unique(label))
        assert ed_image.min() >= 0 and np.percentile(ed_image, 99.9) > 100
        dtypes.add(ed_image.dtype.name)
    assert dtypes == {"float32", "int16", "uint8"}


def test_acdc_affine_matches_zooms(acdc_dir: Path) -> None:
    path = next((acdc_dir / "database" / "training" / "patient001").glob("*_gt.nii.gz"))
    image = nib.load(path)
    assert np.allclose(np.abs(np.diag(image.affine))[:3], image.header.get_zooms())


# --- ACDC: anatomy -------------------------------------------------------------------------


def _slice_errors(label: np.ndarray) -> list[str]:
    """The checks an expert mask passes: one piece each, no holes, LV walled in by MYO."""
    lv, myo, rv = label == 3, label == 2, label == 1
    errors = []
    for name, mask in (("LV", lv), ("MYO", myo), ("RV", rv)):
        if mask.any() and ndimage.label(mask, EIGHT)[1] != 1:
            errors.append(f"{name} in several pieces")
        region = mask | lv if name == "MYO" else mask
        if (ndimage.binary_fill_holes(region) & ~region).any():
            errors.append(f"hole in {name}")
    foreground = label > 0
    if (ndimage.binary_fill_holes(foreground) & ~foreground).any():
        errors.append("background enclosed by the heart")
    if lv.any():
        around = ndimage.binary_dilation(lv, EIGHT)
        if (around & (label == 0)).any():
            errors.append("LV touches background")
        if (around & rv).any():
            errors.append("LV touches RV")
    if rv.any() and not (ndimage.binary_dilation(rv, EIGHT) & myo).any():
        errors.append("RV does not touch MYO")
    if (lv.any() or rv.any()) and not myo.any():
        errors.append("cavity without myocardium")
    return errors


def test_acdc_every_slice_is_anatomically_valid(acdc_frames: dict) -> None:
    failures = []
    for patient, phases in acdc_frames.items():
        for phase, (_, label, _) in phases.items():
            for z in range(label.shape[2]):
                failures += [f"{patient} {phase} z={z}: {e}" for e in _slice_errors(label[..., z])]
    assert not failures, "\n".join(failures)


def test_slice_checker_catches_broken_masks() -> None:
    """The checks above can fail: a gap in the ring, a stray RV island, a detached RV."""
    yy, xx = np.mgrid[:80, :80]
    r = np.hypot(yy - 40, xx - 40)
    good = np.where(r < 20, 2, 0).astype(np.uint8)
    good[r < 12] = 3
    good[(r >= 20) & (r < 28) & (xx < 30)] = 1
    assert _slice_errors(good) == []
    gap = good.copy()
    gap[38:43, 52:62] = 0
    assert "LV touches background" in _slice_errors(gap)
    island = good.copy()
    island[2:5, 2:5] = 1
    assert "RV in several pieces" in _slice_errors(island)
    detached = np.where(good == 1, 0, good).astype(np.uint8)
    detached[5:10, 5:10] = 1
    assert "RV does not touch MYO" in _slice_errors(detached)


def test_acdc_apex_and_base(acdc_frames: dict) -> None:
    """Structures shrink from base (slice 0) to apex; the RV ends before the LV."""
    for patient, phases in acdc_frames.items():
        label = phases["ED"][1]
        heart = [z for z in range(label.shape[2]) if label[..., z].any()]
        areas = [int((label[..., z] > 1).sum()) for z in heart]
        assert areas[0] > 2 * areas[-1], patient
        assert not (label[..., heart[-1]] == 1).any(), f"{patient}: RV on the apical slice"


def _volume_ml(label: np.ndarray, value: int, zooms: tuple) -> float:
    return float((label == value).sum() * np.prod(zooms) / 1000.0)


def _wall_mm(label: np.ndarray, zooms: tuple) -> float:
    """Mean wall thickness on the slices with an LV cavity, from ring areas."""
    values = []
    for z in range(label.shape[2]):
        lv, myo = (label[..., z] == 3).sum(), (label[..., z] == 2).sum()
        if lv:
            values.append(np.sqrt((lv + myo) / np.pi) - np.sqrt(lv / np.pi))
    return float(np.mean(values) * zooms[0])


def test_acdc_systole_is_smaller(acdc_frames: dict) -> None:
    for patient, phases in acdc_frames.items():
        (_, ed, zooms), (_, es, _) = phases["ED"], phases["ES"]
        assert _volume_ml(es, 3, zooms) < _volume_ml(ed, 3, zooms), patient
        assert _volume_ml(es, 1, zooms) < _volume_ml(ed, 1, zooms), patient
        assert _wall_mm(es, zooms) > _wall_mm(ed, zooms), patient
        # the myocardium is incompressible: its volume barely changes
        assert _volume_ml(es, 2, zooms) == pytest.approx(_volume_ml(ed, 2, zooms), rel=0.25)


def test_acdc_groups_differ_as_in_the_clinic(acdc_dir: Path, acdc_frames: dict) -> None:
    def measures(group: str) -> dict[str, float]:
        phases = acdc_frames[_groups(acdc_dir)[group]]
        (_, ed, zooms), (_, es, _) = phases["ED"], phases["ES"]
        edv, esv = _volume_ml(ed, 3, zooms), _volume_ml(es, 3, zooms)
        return {
            "edv": edv,
            "ef": 1 - esv / edv,
            "wall": _wall_mm(ed, zooms),
            "rv": _volume_ml(ed, 1, zooms),
        }

    nor, dcm, hcm = measures("NOR"), measures("DCM"), measures("HCM")
    minf, rv = measures("MINF"), measures("RV")
    assert 80 < nor["edv"] < 200 and 0.5 < nor["ef"] < 0.75 and 7 < nor["wall"] < 12
    assert dcm["edv"] > 1.4 * nor["edv"] and dcm["ef"] < 0.4 and dcm["wall"] < nor["wall"]
    assert hcm["wall"] > 1.4 * nor["wall"] and hcm["edv"] < nor["edv"] and hcm["ef"] > nor["ef"]
    assert minf["ef"] < nor["ef"] - 0.15
    assert rv["rv"] > 1.5 * nor["rv"]


def test_acdc_infarct_thins_one_segment(acdc_dir: Path, acdc_frames: dict) -> None:
    """MINF: the thinnest wall is much thinner than the typical wall, unlike NOR."""

    def thinning(group: str) -> float:
        label = acdc_frames[_groups(acdc_dir)[group]]["ED"][1]
        ratios = []
        for z in range(label.shape[2]):
            sl = label[..., z]
            if not (sl == 3).any():
                continue
            to_lv = ndimage.distance_transform_edt(sl != 3)
            outer = (sl == 2) & ndimage.binary_dilation(sl < 2, EIGHT)
            thickness = to_lv[outer]
            ratios.append(np.percentile(thickness, 2) / np.median(thickness))
        return float(min(ratios))

    assert thinning("MINF") < 0.75 * thinning("NOR")


def test_acdc_images_show_bright_blood_and_dark_myocardium(acdc_frames: dict) -> None:
    for patient, phases in acdc_frames.items():
        image, label, _ = phases["ED"]
        image = image.astype(float)
        lv, myo = image[label == 3].mean(), image[label == 2].mean()
        rv, background = image[label == 1].mean(), np.median(image[label == 0])
        assert lv > 2 * myo and rv > 2 * myo and lv > background, patient


def test_acdc_motion_is_confined_to_the_heart(acdc_frames: dict) -> None:
    """ED and ES differ at the heart, not in the surroundings (beyond noise)."""
    image_ed, label, _ = acdc_frames["patient001"]["ED"]
    image_es = acdc_frames["patient001"]["ES"][0]
    diff = np.abs(image_ed.astype(float) - image_es.astype(float))
    heart = ndimage.binary_dilation(label > 0, iterations=8)
    assert diff[heart].mean() > 2 * diff[~heart].mean()


# --- ACDC: determinism and atomic output ---------------------------------------------------


def test_acdc_same_seed_same_bytes_and_patients_are_independent(
    acdc_dir: Path, tmp_path: Path
) -> None:
    write_acdc_phantom(tmp_path / "again", 2, seed=0)
    again = _files(tmp_path / "again")
    full = _files(acdc_dir)
    assert again and all(full[name] == data for name, data in again.items())
    write_acdc_phantom(tmp_path / "other", 1, seed=1)
    other = _files(tmp_path / "other")
    images = [name for name in other if name.endswith(".nii.gz")]
    assert images and all(other[name] != full.get(name) for name in images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_acdc_replaces_output_atomically(tmp_path: Path) -> None:
    out = tmp_path / "acdc"
    out.mkdir()
    (out / "stale.txt").write_text("old run")
    write_acdc_phantom(out, 1, seed=3)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["acdc"]  # no temporary folder left
    with pytest.raises(SeglabError, match="at least one patient"):
        write_acdc_phantom(tmp_path / "none", 0, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == ["acdc"]


def test_acdc_phantom_opens_with_the_reader(acdc_dir: Path) -> None:
    from seglab.data.acdc import open_acdc

    with open_acdc(acdc_dir) as dataset:
        assert [p.id for p in dataset.patients] == [f"patient{i:03d}" for i in range(1, 6)]
        for patient in dataset.patients:
            for phase in ("ED", "ES"):
                frame = dataset.load(patient.id, phase)
                assert frame.label.shape == frame.image.shape


# --- LGG -----------------------------------------------------------------------------------


def _cases(lgg_dir: Path) -> list[Path]:
    return sorted(p for p in (lgg_dir / "kaggle_3m").iterdir() if p.is_dir())


def test_lgg_layout(lgg_dir: Path) -> None:
    root = lgg_dir / "kaggle_3m"
    assert {p.name for p in root.iterdir() if p.is_file()} == {"data.csv", "README.md"}
    cases = _cases(lgg_dir)
    assert len(cases) == LGG_PATIENTS
    for case in cases:
        assert case.name.startswith("TCGA_") and len(case.name.split("_")) == 4
        assert len(case.name.split("_")[3]) == 8 and case.name.split("_")[3].isdigit()
        masks = sorted(case.glob("*_mask.tif"))
        n = len(masks)
        assert 20 <= n <= 40
        expected = {f"{case.name}_{i}.tif" for i in range(1, n + 1)}
        expected |= {f"{case.name}_{i}_mask.tif" for i in range(1, n + 1)}
        assert {p.name for p in case.iterdir()} == expected  # not zero-padded


def test_lgg_slices_are_rgb_and_masks_binary(lgg_dir: Path) -> None:
    for case in _cases(lgg_dir):
        n = len(list(case.glob("*_mask.tif")))
        has_tumour = []
        for i in range(1, n + 1):
            with Image.open(case / f"{case.name}_{i}.tif") as image:
                assert image.mode == "RGB" and image.info.get("compression") == "raw"
                rgb = np.asarray(image)
            with Image.open(case / f"{case.name}_{i}_mask.tif") as image:
                assert image.mode == "L"
                mask = np.asarray(image)
            assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
            assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 255}
            has_tumour.append(bool(mask.any()))
            if mask.any():  # FLAIR-hyperintense tumour, less so on pre/post-contrast
                inside, brain = rgb[mask > 0].astype(float), rgb[(mask == 0) & (rgb[..., 1] > 60)]
                assert inside[:, 1].mean() > 1.5 * brain[:, 1].mean()
                # (a missing pre- or post-contrast sequence is a copy of FLAIR, as in the real set)
                assert inside[:, 1].mean() > min(inside[:, 0].mean(), inside[:, 2].mean()) + 60
                assert ndimage.label(mask > 0, EIGHT)[1] == 1
        runs = np.flatnonzero(np.diff(np.r_[0, has_tumour, 0]))
        assert len(runs) == 2, "tumour slices should form one contiguous run"
        assert 0 < sum(has_tumour) < n and not has_tumour[0] and not has_tumour[-1]


def test_lgg_table(lgg_dir: Path) -> None:
    rows = list(csv.reader(io.StringIO((lgg_dir / "kaggle_3m" / "data.csv").read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    cases = {"_".join(c.name.split("_")[:3]) for c in _cases(lgg_dir)}
    assert {row[0] for row in rows[1:]} == cases
    assert all(len(row) == len(CSV_COLUMNS) for row in rows)


@pytest.mark.realdata
def test_lgg_table_header_matches_the_real_one(lgg_real_zip: Path) -> None:
    with zipfile.ZipFile(lgg_real_zip) as archive:
        header = archive.read("kaggle_3m/data.csv").decode().splitlines()[0]
    assert tuple(header.split(",")) == CSV_COLUMNS


def test_lgg_same_seed_same_bytes(lgg_dir: Path, tmp_path: Path) -> None:
    write_lgg_phantom(tmp_path / "again", 1, seed=0)
    again = _files(tmp_path / "again")
    full = _files(lgg_dir)
    case = _cases(tmp_path / "again")[0].name
    assert all(full[name] == data for name, data in again.items() if case in name)
    write_lgg_phantom(tmp_path / "other", 1, seed=1)
    assert _files(tmp_path / "other") != again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "other"]


def test_lgg_phantom_opens_with_the_reader(lgg_dir: Path) -> None:
    from seglab.data.lgg import open_lgg

    with open_lgg(lgg_dir) as dataset:
        assert len(dataset.patients) == LGG_PATIENTS
        volume = dataset.load(dataset.patients[0].id)
        assert volume.image.shape[1:] == (256, 256, 3) and set(np.unique(volume.mask)) == {0, 1}
