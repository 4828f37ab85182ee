"""The served chain: registered from the champions, loaded as pyfunc, and answered over REST by
`mlflow models serve` (a real server on a free loopback port)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from seglab.cli import main
from seglab.config import CardiacParams, SegmentersParams, SegmenterTrainParams, TrackingParams
from seglab.data.phantom.acdc import write_acdc_phantom
from seglab.errors import SeglabError
from seglab.inference.cardiac import patient_images
from seglab.inference.served import PIPELINE, decode, register_pipeline
from seglab.tracking import log_metrics, set_tags, tracked_run
from seglab.tracking.models import log_and_register
from seglab.tracking.registry import CHAMPION, evaluation_tags
from seglab.training.segmenters import new_module

ROOT = Path(__file__).resolve().parents[2]
REAL_PATIENT = ROOT.parent / "shared" / "data" / "acdc" / "database" / "training" / "patient001"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CardiacParams]:
    """A store with one champion segmenter (untrained, 2.5D, with its clean-up) and the chain
    registered from it."""
    root = tmp_path_factory.mktemp("served")
    params = CardiacParams(tracking=TrackingParams(uri="sqlite:///mlflow.db"))
    module = new_module("unet", SegmentersParams(train=SegmenterTrainParams(context_slices=1)))
    with tracked_run(params.tracking, "acdc-segmenters", "unet", root=root):
        log_metrics({"dice_mean": 0.8, "anatomical_validity": 0.7, "emptied_fraction": 0.0})
        set_tags({"postprocess": "heart", "postprocess_min_pixels": 10})
        example = np.random.default_rng(0).random((2, 3, 128, 128), np.float32)
        version = log_and_register(
            module.net, "acdc-segmenter-unet", example, tags=evaluation_tags("test", "md5")
        )
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    client.set_registered_model_alias("acdc-segmenter-unet", CHAMPION, version.version)
    record = register_pipeline(params, root=root)
    assert record["message"].startswith(f"registered {PIPELINE} version 1 (challenger)")
    assert record["built_from"] == {"segmenter": "models:/acdc-segmenter-unet@champion (version 1)"}
    client.set_registered_model_alias(PIPELINE, CHAMPION, "1")
    return root, params


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if REAL_PATIENT.is_dir():
        return patient_images(REAL_PATIENT)
    root = tmp_path_factory.mktemp("phantom")
    write_acdc_phantom(root, patients=1, seed=1)
    return patient_images(root / "database" / "training" / "patient001")


@pytest.mark.slow
def test_the_pipeline_version_names_the_champions_it_was_built_from(
    project: tuple[Path, CardiacParams],
) -> None:
    root, _ = project
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    tags = client.get_model_version(PIPELINE, "1").tags
    assert tags["segmenter.model"] == "models:/acdc-segmenter-unet@champion"
    assert tags["segmenter.version"] == "1" and "corrector.model" not in tags
    run = client.get_run(client.get_model_version(PIPELINE, "1").run_id)
    assert run.data.metrics["dice_mean"] == 0.8  # promoted on its segmenter's test figures
    assert str(client.get_registered_model(PIPELINE).aliases["challenger"]) == "1"


@pytest.mark.slow
def test_pyfunc_answers_label_volumes_in_the_inputs_geometry_and_a_report(
    project: tuple[Path, CardiacParams], patient: dict[str, Path]
) -> None:
    root, _ = project
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{PIPELINE}@{CHAMPION}")
    answer = model.predict(pd.DataFrame([{"ed": b64(patient["ED"]), "es": b64(patient["ES"])}]))
    for column, phase in (("ed", "ED"), ("es", "ES")):
        labels = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(answer[column][0])))
        source = nib.load(patient[phase])
        assert labels.shape == source.shape
        np.testing.assert_allclose(labels.affine, source.affine)
        assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2, 3}
    report = json.loads(answer["report"][0])
    assert report["models"]["segmenter"]["version"] == "1"
    assert len(report["frames"]["ES"]["slice_valid"]) == nib.load(patient["ES"]).shape[2]
    assert "lv_ef_pct" in report["clinical"]


def test_bad_fields_are_one_line_naming_them(tmp_path: Path) -> None:
    for text in ("not base64!", "nope", base64.b64encode(b"\x1f\x8b not gzip").decode()):
        with pytest.raises(SeglabError, match="^ed: not a base64-encoded NIfTI image$"):
            decode(text, "ed")
    flat = nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4))
    with pytest.raises(SeglabError, match=r"^es: expected a 3D image \(x, y, z\), got shape"):
        decode(base64.b64encode(flat.to_bytes()).decode(), "es")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(project: tuple[Path, CardiacParams]) -> Iterator[str]:
    root, _ = project
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{PIPELINE}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (root / "serve.log").read_text()
                time.sleep(1)
        else:
            pytest.fail("mlflow models serve did not answer /ping in 180 s")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def post(url: str, records: list[dict[str, str]]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_patient_and_refuses_bad_input(
    served: str, patient: dict[str, Path]
) -> None:
    status, answer = post(served, [{"ed": b64(patient["ED"]), "es": b64(patient["ES"])}])
    assert status == 200
    (row,) = answer["predictions"]
    report = json.loads(row["report"])
    assert 0 <= report["clinical"]["lv_edv_ml"] and len(report["frames"]) == 2

    flat = nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4))
    other = nib.Nifti1Image(np.zeros((9, 9, 2), np.float32), np.eye(4))
    for record, message in (
        ({"ed": "not an image"}, "row 0: ed: not a base64-encoded NIfTI image"),
        ({"ed": "nope"}, "row 0: ed: not a base64-encoded NIfTI image"),  # valid base64
        ({"ed": base64.b64encode(flat.to_bytes()).decode()}, "row 0: ed: expected a 3D image"),
        (
            {"ed": b64(patient["ED"]), "es": base64.b64encode(other.to_bytes()).decode()},
            "row 0: es: the ES image",
        ),
    ):
        status, error = post(served, [record])
        assert 400 <= status < 500 and message in error["message"]


def test_the_command_registers_nothing_without_a_segmenter_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("profile: quick\n")
    assert main(["registry", "pipeline", "--if-champion", "--out", "pipeline.json"]) == 0
    assert capsys.readouterr().out.startswith("nothing to serve: no registered model named")
    assert "skipped" in json.loads((tmp_path / "pipeline.json").read_text())
    assert main(["registry", "pipeline"]) == 2  # without --if-champion: an error


@pytest.mark.slow
def test_the_command_registers_and_promotes_a_new_version(
    project: tuple[Path, CardiacParams], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = project
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text("profile: quick\n")
    assert main(["registry", "pipeline", "--promote", "--out", "pipeline.json"]) == 0
    record = json.loads((root / "pipeline.json").read_text())
    assert record["version"] == "2"
    # Same segmenter, same figures: not better than the champion (version 1), which stays.
    assert record["promotion"]["outcome"] != "promoted"
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    assert str(client.get_registered_model(PIPELINE).aliases[CHAMPION]) == "1"
