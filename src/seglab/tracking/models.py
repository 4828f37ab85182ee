"""Log a trained PyTorch network to the active run and register it, with its lineage.

The model is saved in MLflow's default PyTorch format for 3.x, ``pt2`` (``torch.export``: a
traced graph, loaded without unpickling code), with a tensor signature inferred from
``input_example`` and the network's output on it. The registered version carries the run id and
the run's lineage tags (git commit, dirty flag, DVC md5 of each input dataset, params hash), so a
version can be traced, and compared with another one, without opening its run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import metadata

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from seglab.errors import SeglabError
from seglab.tracking.runs import _active_run_id

LINEAGE_PREFIXES = ("git.", "data.", "params.sha256")


def serving_requirements() -> list[str]:
    """What loading an exported (``pt2``) network needs: torch and numpy at this run's versions.

    Stated instead of inferred: MLflow's inference imports the model in a subprocess and costs
    20-60 s per registration on a small CPU, and would list the whole training stack."""
    return [
        f"torch=={metadata.version('torch')}",
        f"numpy=={metadata.version('numpy')}",
    ]


def log_and_register(
    model: torch.nn.Module,
    name: str,
    input_example: np.ndarray,
    *,
    artifact_path: str = "model",
    tags: Mapping[str, str] | None = None,
) -> ModelVersion:
    """Log ``model`` (a CPU copy, in eval mode) to the active run and register it as ``name``.

    ``input_example`` is a float array of real inputs; give at least two items along the batch
    axis, or ``torch.export`` fixes the batch size to 1. ``tags`` are added to the version's.
    """
    run_id = _active_run_id()
    net = copy.deepcopy(model).cpu().eval()
    example = np.ascontiguousarray(input_example, dtype=np.float32)
    with torch.no_grad():
        output = net(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        net,
        name=artifact_path,
        input_example=example,
        signature=infer_signature(example, output),
        registered_model_name=name,
        pip_requirements=serving_requirements(),
    )
    client = MlflowClient()
    version = str(info.registered_model_version)
    run_tags = client.get_run(run_id).data.tags
    lineage = {k: v for k, v in run_tags.items() if k.startswith(LINEAGE_PREFIXES)}
    for key, value in {"run_id": run_id, **lineage, **dict(tags or {})}.items():
        client.set_model_version_tag(name, version, key, str(value))
    return client.get_model_version(name, version)


def input_shape(uri: str) -> tuple[int, int]:
    """``(in_channels, image_size)`` from a logged model's signature ``[-1, C, S, S]``."""
    try:
        signature = mlflow.models.get_model_info(uri).signature
        shape = signature.inputs.to_dict()[0]["tensor-spec"]["shape"]
    except (MlflowException, OSError, AttributeError, KeyError, IndexError) as exc:
        raise SeglabError(f"{uri}: no tensor input signature to read its input shape") from exc
    if len(shape) != 4 or shape[2] != shape[3] or min(shape[1:]) < 1:
        raise SeglabError(f"{uri}: input signature {shape} is not [batch, channels, S, S]")
    return int(shape[1]), int(shape[2])
