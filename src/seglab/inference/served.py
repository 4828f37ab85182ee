"""The chain served from the registry: an MLflow pyfunc model, registered as
``acdc-cardiac-pipeline``, that answers ``mlflow models serve`` requests with the label volumes
and the report of :mod:`seglab.inference.cardiac`.

It is built from the registry's champions (the best segmenter, and the NVAE corrector and the
NVAE of ground-truth masks when they have one): their logged networks are copied into the
pipeline's artifacts, and the versions and runs they came from are tagged on the pipeline's
version, so a served figure traces back to its models. Its run carries the segmenter's test
figures, so ``seglab promote`` judges it like any model.

A request is one row per patient, each NIfTI file as base64 (gzipped or not)::

    {"dataframe_records": [{"ed": "<base64 ED image>", "es": "<base64 ES image>"}]}

(``es`` may be empty: one frame, no clinical indices). The answer, per row: ``ed`` and ``es``
label volumes (base64 .nii.gz, the input's geometry) and ``report`` (the JSON report). Bad input
(not base64, not a NIfTI image, not a 3D volume, ES on another grid than ED) is a 400 with one
line naming the field and the problem.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema

from seglab.config import AcdcPrepareParams, CardiacParams, GateParams
from seglab.data.acdc import NIFTI_ERRORS
from seglab.errors import SeglabError
from seglab.inference.cardiac import Chain, Volume
from seglab.inference.correct import Corrector
from seglab.inference.correction import stored_gate
from seglab.inference.postprocess import Cleanup
from seglab.inference.segment import SEGMENTER_PREFIX, Segmenter, open_segmenter
from seglab.tracking import log_metrics, tracked_run
from seglab.tracking.models import input_shape, serving_requirements
from seglab.tracking.registry import (
    CHALLENGER,
    EVAL_DATASET_TAG,
    EVAL_SPLIT_TAG,
    best_champion,
    resolve_version,
    set_alias,
    version_run_tags,
)

PIPELINE = "acdc-cardiac-pipeline"
EXPERIMENT = "acdc-pipeline"
CORRECTOR = "models:/acdc-nvae-corrector@champion"
GT_NVAE = "models:/acdc-nvae@champion"
#: The segmenter's test figures its pipeline version is promoted on.
FIGURES = ("dice_mean", "anatomical_validity", "emptied_fraction", "hd95_mean")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "ed"), ColSpec("string", "es", required=False)]),
    outputs=Schema([ColSpec("string", "ed"), ColSpec("string", "es"), ColSpec("string", "report")]),
)


def decode(text: Any, field: str) -> Volume:
    """A base64 NIfTI image (gzipped or not) from request field ``field``."""
    if not isinstance(text, str) or not text:
        raise SeglabError(f"{field}: expected a base64-encoded NIfTI image")
    try:
        data = base64.b64decode(text, validate=True)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        nii = nib.Nifti1Image.from_bytes(data)
        voxels = np.asanyarray(nii.dataobj).astype(np.float32)
    except (binascii.Error, *NIFTI_ERRORS):
        raise SeglabError(f"{field}: not a base64-encoded NIfTI image") from None
    if voxels.ndim == 4 and voxels.shape[3] == 1:
        voxels = voxels[..., 0]
    if voxels.ndim != 3:
        raise SeglabError(f"{field}: expected a 3D image (x, y, z), got shape {voxels.shape}")
    if not np.isfinite(voxels).all():
        raise SeglabError(f"{field}: the image contains NaN or infinite values")
    zooms = tuple(float(z) for z in nii.header.get_zooms()[:3])
    if not all(z > 0 for z in zooms):
        raise SeglabError(f"{field}: invalid voxel spacing {zooms} in the header")
    return Volume(nii, voxels, (zooms[0], zooms[1], zooms[2]), field)


def encode(labels: np.ndarray, like: nib.Nifti1Image) -> str:
    """Labels in ``like``'s geometry as a base64 .nii.gz."""
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    image = type(like)(labels.reshape(like.shape).astype(np.uint8), like.affine, header)
    return base64.b64encode(gzip.compress(image.to_bytes(), 6)).decode()


class CardiacPipeline(PythonModel):
    """The pyfunc model: the chain, rebuilt from the pipeline's artifacts when it loads."""

    def load_context(self, context: PythonModelContext) -> None:
        config = json.loads(Path(context.artifacts["config"]).read_text())

        def net(key: str) -> Any:
            return mlflow.pytorch.load_model(context.artifacts[key], map_location="cpu")

        seg = config["segmenter"]
        segmenter = Segmenter(
            net("segmenter"), seg["context"], Cleanup.from_hparams(seg), seg["name"],
            seg["version"], seg["run_id"], seg.get("flips", False), seg.get("position", False),
        )  # fmt: skip
        loaded = {
            key: Corrector(
                net(key), config[key]["in_channels"], config[key]["size"], config[key]["name"]
            )  # fmt: skip
            for key in ("corrector", "gt_nvae")
            if key in context.artifacts
        }
        self.chain = Chain(
            segmenter,
            AcdcPrepareParams.model_validate(config["prepare"]),
            GateParams.model_validate(config["gate"]),
            loaded.get("corrector"),
            config["gated"],
            loaded.get("gt_nvae"),
        )

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None
    ) -> pd.DataFrame:
        rows = []
        for i, record in enumerate(model_input.to_dict("records")):
            try:
                volumes = {"ED": decode(record.get("ed"), f"row {i}: ed")}
                if record.get("es"):
                    volumes["ES"] = decode(record["es"], f"row {i}: es")
                report = self.chain(volumes)
            except SeglabError as exc:
                raise MlflowException.invalid_parameter_value(str(exc)) from None
            labels = {
                name: encode(f.labels, volumes[name].nii) for name, f in report.frames.items()
            }
            rows.append(
                {
                    "ed": labels["ED"],
                    "es": labels.get("ES", ""),
                    "report": json.dumps(report.to_dict(), default=str),
                }
            )
        return pd.DataFrame(rows, columns=["ed", "es", "report"])


def _champion(uri: str, params: CardiacParams, root: Path) -> str | None:
    """``uri`` when that champion exists, else None (a corrector is optional)."""
    try:
        resolve_version(uri, params.tracking, root)
    except SeglabError:
        return None
    return uri


def register_pipeline(
    params: CardiacParams,
    *,
    root: Path,
    segmenter: str = "best",
    corrector: str | None = CORRECTOR,
    gated: bool = True,
) -> dict[str, Any]:
    """Register the chain built from ``segmenter`` (``best``: the best segmenter champion) and,
    when they have a champion, the corrector and the NVAE of ground-truth masks, as a new
    version of :data:`PIPELINE` with alias ``challenger``. Returns the version, what it was built
    from, and a line saying so (``message``)."""
    root = Path(root)
    tracking = params.tracking
    if segmenter == "best":
        segmenter = best_champion(SEGMENTER_PREFIX, tracking, root)
    if not segmenter.startswith("models:/"):
        raise SeglabError(f"{segmenter}: the served pipeline is built from registered models")
    chosen = open_segmenter(segmenter, tracking, root)
    seg_version = resolve_version(segmenter, tracking, root)
    seg_tags = {**version_run_tags(seg_version, tracking, root), **(seg_version.tags or {})}
    parts = {"segmenter": segmenter}
    if corrector is not None and _champion(corrector, params, root):
        parts["corrector"] = corrector
    if _champion(GT_NVAE, params, root):
        parts["gt_nvae"] = GT_NVAE
    config: dict[str, Any] = {
        "prepare": params.acdc.prepare.model_dump(mode="json"),
        "gated": gated and "corrector" in parts,
    }
    tags = {}
    corrector_gate = None  # the gate the corrector's training chose
    for key, uri in parts.items():
        version = resolve_version(uri, tracking, root)
        if key == "corrector":
            corrector_gate = stored_gate(version.tags or {})
        channels, size = input_shape(uri)
        config[key] = {
            "name": f"{uri} (version {version.version})",
            "version": str(version.version),
            "run_id": version.run_id,
            "in_channels": channels,
            "size": size,
        }
        tags[f"{key}.model"] = uri
        tags[f"{key}.version"] = str(version.version)
        tags[f"{key}.run_id"] = str(version.run_id)
    config["gate"] = params.correctors.gate_for(corrector_gate).model_dump(mode="json")
    config["segmenter"].update(
        context=chosen.context,
        flips=chosen.flips,
        position=chosen.position,
        **chosen.cleanup.hparams(),
    )
    seg_run = mlflow.MlflowClient().get_run(seg_version.run_id)
    evaluated = {k: seg_tags[k] for k in (EVAL_SPLIT_TAG, EVAL_DATASET_TAG) if k in seg_tags}
    run_params = {"gated": config["gated"], **parts}
    with (
        tempfile.TemporaryDirectory() as tmp,
        tracked_run(
            tracking, EXPERIMENT, PIPELINE, root=root, params=run_params, tags={**tags, **evaluated}
        ),
    ):
        artifacts = {"config": str(Path(tmp) / "config.json")}
        Path(artifacts["config"]).write_text(json.dumps(config, indent=2))
        for key, uri in parts.items():
            artifacts[key] = mlflow.artifacts.download_artifacts(uri, dst_path=str(Path(tmp) / key))
        log_metrics({k: seg_run.data.metrics[k] for k in FIGURES if k in seg_run.data.metrics})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CardiacPipeline(),
            artifacts=artifacts,
            signature=SIGNATURE,
            registered_model_name=PIPELINE,
            # seglab travels as code; its dependencies as requirements (no PyPI seglab).
            pip_requirements=[*serving_requirements(), *_dependencies()],
            code_paths=[str(Path(__file__).resolve().parents[1])],
        )
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_model_version_tag(PIPELINE, version, key, value)
    set_alias(tracking, root, PIPELINE, CHALLENGER, version, reason="built from the champions")
    built = {key: config[key]["name"] for key in parts}
    listed = ", ".join(f"{key} {name}" for key, name in built.items())
    return {
        "model": PIPELINE,
        "version": version,
        "built_from": built,
        "gated": config["gated"],
        "message": f"registered {PIPELINE} version {version} (challenger) from {listed}",
    }


def _dependencies() -> list[str]:
    """seglab's own requirements (not its optional extras), beside torch and numpy's pins."""
    from importlib.metadata import requires

    pinned = ("torch", "numpy")
    return [r for r in requires("seglab") or [] if "extra ==" not in r and not r.startswith(pinned)]
