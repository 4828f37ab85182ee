"""No command writes over its own input: `correct`, `promote --out`, `phantom` and the prepare
stages refuse, in one line naming the clash, before anything is read or written."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from seglab.cli import main
from seglab.config import AcdcDataParams, AcdcPrepareParams, LggDataParams, SplitParams
from seglab.data.phantom.lgg import write_lgg_phantom
from seglab.data.prepare_acdc import prepare_acdc
from seglab.data.prepare_lgg import prepare_lgg
from seglab.errors import SeglabError


def nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 8.0, 1.0])), path)
    return path


@pytest.fixture
def volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.chdir(tmp_path)
    labels = np.zeros((40, 40, 3), np.uint8)
    labels[15:25, 15:25] = 3
    seg = nifti(tmp_path / "seg.nii.gz", labels)
    image = nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).random((40, 40, 3)))
    return seg, image


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("target", ["seg", "image", "qc-seg", "qc-image", "hardlink", "sidecar"])
def test_correct_refuses_an_output_that_is_one_of_its_inputs(
    volumes: tuple[Path, Path], target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seg, image = volumes
    before = {p: p.read_bytes() for p in (seg, image)}
    args = ["correct", str(seg), "--image", str(image), "--model", "missing.ckpt"]
    if target == "seg":
        args += ["-o", str(seg)]
        expected = f"-o {seg} is the input SEG {seg}"
    elif target == "image":
        args += ["-o", str(image)]
        expected = f"-o {image} is the input --image {image}"
    elif target == "qc-seg":
        args += ["-o", "out.nii.gz", "--qc", str(seg)]
        expected = f"--qc {seg} is the input SEG {seg}"
    elif target == "qc-image":
        args += ["-o", "out.nii.gz", "--qc", "img.nii.gz"]
        expected = f"--qc img.nii.gz is the input --image {image}"
    elif target == "hardlink":
        os.link(image, "linked.nii.gz")
        args += ["-o", "linked.nii.gz"]
        expected = f"-o linked.nii.gz is the input --image {image}"
    else:  # the default QC sidecar of -o x.nii.gz is x.qc.csv: here the params file
        Path("x.qc.csv").write_text("acdc: {}\n")
        args += ["-o", "x.nii.gz", "--params", "x.qc.csv"]
        expected = "--qc x.qc.csv is the input --params x.qc.csv"
    assert main(args) == 2
    assert expected in error_line(capsys)
    assert {p: p.read_bytes() for p in (seg, image)} == before


def test_promote_refuses_to_write_its_decisions_over_the_params_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    text = "tracking:\n  uri: sqlite:///mlflow.db\n"
    Path("params.yaml").write_text(text)
    assert main(["promote", "--all", "--allow-refusals", "--out", "params.yaml"]) == 2
    assert "--out params.yaml is the input --params params.yaml" in error_line(capsys)
    assert Path("params.yaml").read_text() == text
    assert not Path("mlflow.db").exists()  # refused before the registry was opened


def test_phantom_refuses_to_replace_the_folder_it_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "keep.txt").write_text("mine")
    monkeypatch.chdir(project)
    for out in (str(project), str(tmp_path)):
        assert main(["phantom", "lgg", out, "--patients", "1"]) == 2
        assert f"OUT {out} " in error_line(capsys)
    assert (project / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_prepare_refuses_a_prepared_folder_that_holds_the_raw_data(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    write_lgg_phantom(raw, patients=1, seed=0)
    files = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    for prepared in (tmp_path / "data", raw):
        with pytest.raises(SeglabError, match=f"lgg.prepared {prepared} (holds|is) the input"):
            prepare_lgg(LggDataParams(raw=str(raw), prepared=str(prepared)))
        split = AcdcPrepareParams(split=SplitParams(val=0.0, test=0.0))
        acdc = AcdcDataParams(raw=str(raw), prepared=str(prepared), prepare=split)
        with pytest.raises(SeglabError, match=f"acdc.prepared {prepared} (holds|is) the input"):
            prepare_acdc(acdc)
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == files
