"""`seglab segment`: a phantom patient in, label volumes in its geometry and a report out; bad
input is one line and leaves nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.config import CardiacParams, SegmentersParams, SegmenterTrainParams, TrainerParams
from seglab.data.phantom.acdc import write_acdc_phantom
from seglab.errors import DataError
from seglab.inference.cardiac import Chain, default_outputs, patient_images, segment_images
from seglab.inference.segment import open_segmenter
from seglab.metrics.clinical import INDICES
from seglab.training.segmenters import new_module


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    write_acdc_phantom(root, patients=1, seed=4)
    return root / "database" / "training" / "patient001"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) 2.5D segmenter checkpoint with its clean-up, as the stage writes them."""
    train = SegmenterTrainParams(context_slices=1, trainer=TrainerParams(accelerator="cpu"))
    module = new_module("unet", SegmentersParams(train=train))
    module.hparams.update({"postprocess": "heart", "min_pixels": 0})
    path = tmp_path_factory.mktemp("models") / "unet.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": "2.6.6",
        },
        path,
    )
    return path


def test_a_patient_folder_gives_its_ed_and_es_images(patient: Path) -> None:
    images = patient_images(patient)
    frames = sorted(p.name for p in patient.glob("patient001_frame??.nii.gz"))
    assert [images["ED"].name, images["ES"].name] == frames  # ED is frame 1, ES after it
    assert default_outputs(Path("o/seg.nii.gz"), ("ED", "ES")) == {
        "ED": Path("o/seg.nii.gz"),
        "ES": Path("o/seg_es.nii.gz"),
    }
    with pytest.raises(DataError, match="not an ACDC patient folder"):
        patient_images(patient.parent)


def test_segments_ed_and_es_in_their_own_geometry_with_a_report(
    patient: Path, checkpoint: Path, tmp_path: Path
) -> None:
    images = patient_images(patient)
    outs = default_outputs(tmp_path / "seg.nii.gz", ("ED", "ES"))
    segmenter = open_segmenter(str(checkpoint), CardiacParams().tracking, tmp_path)
    assert segmenter.context == 1 and segmenter.cleanup.method == "heart"
    chain = Chain.from_params(segmenter, CardiacParams(), tmp_path)
    report = segment_images(images, outs, chain, tmp_path / "report.json")
    for phase in ("ED", "ES"):
        source, written = nib.load(images[phase]), nib.load(outs[phase])
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine)
        assert written.header.get_zooms() == source.header.get_zooms()
        labels = np.asarray(written.dataobj)
        assert written.get_data_dtype() == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert set(INDICES) <= saved["clinical"].keys()
    assert saved["models"]["segmenter"]["name"] == str(checkpoint)
    ed = saved["frames"]["ED"]
    assert len(ed["slice_valid"]) == ed["slices"] == nib.load(images["ED"]).shape[2]
    assert ed["plausibility"] is None  # no NVAE of ground-truth masks in this project
    assert report.render(outs).startswith(f"segmented with {checkpoint}")
    assert saved["frames"]["ES"]["segmentation"] == str(outs["ES"])


def test_bad_input_is_one_line_and_writes_nothing(
    patient: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = patient / "patient001_frame01.nii.gz"
    out = tmp_path / "seg.nii.gz"
    model = ["--model", str(checkpoint)]
    assert main(["segment", str(image), "-o", str(image), *model]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert main(["segment", str(image), "-o", str(tmp_path / "seg.png"), *model]) == 2
    assert "must be a .nii or .nii.gz file" in capsys.readouterr().err
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(image.read_bytes()[:200])
    assert main(["segment", str(image), "--es", str(broken), "-o", str(out), *model]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"seglab: error: {broken}: not a readable NIfTI image") and "\n" == err[-1]
    )
    assert not out.exists() and not list(tmp_path.glob("seg*"))
    assert main(["segment", str(patient), "--es", str(image), "-o", str(out), *model]) == 2
    assert "patient folder, whose ES image is known" in capsys.readouterr().err


def test_the_command_writes_what_the_report_says(
    patient: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "p1.nii.gz", tmp_path / "p1.json"
    argv = ["segment", str(patient), "-o", str(out), "--model", str(checkpoint)]
    assert main([*argv, "--report", str(report)]) == 0
    text = capsys.readouterr().out
    assert f"ED: {out}" in text and "LV EDV" in text
    assert json.loads(report.read_text())["frames"]["ES"]["segmentation"] == str(
        tmp_path / "p1_es.nii.gz"
    )
