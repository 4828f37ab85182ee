"""What the training stages share: the resumable work folder of a training, named after what
its result depends on, so a training with other settings never resumes from it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from seglab.config import NvaeParams, NvaeStageParams


def fingerprint(settings: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the sha256 of ``settings`` as sorted JSON."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def work_folder(root: Path, base: str, name: str, settings: Any) -> Path:
    """``<root>/<base>/<name>-<fingerprint of settings>``: where a training keeps its checkpoints
    (and MLflow run id) until its stage completes."""
    return Path(root) / base / f"{name}-{fingerprint(settings)}"


def nvae_work_dir(params: NvaeStageParams, root: Path, data_md5: str, source: str = "gt") -> Path:
    """The resumable checkpoint folder of an NVAE training with exactly these settings."""
    settings = {
        "model": params.model.model_dump(mode="json"),
        "trainer": params.trainer.model_dump(mode="json"),
        "source": source,
        "data": data_md5,
    }
    return work_folder(root, params.work, source, settings)


def run_name(model: NvaeParams) -> str:
    """``nvae-stem4-beta8-10-11``: the two settings the study compared runs by."""
    return f"nvae-stem{model.stem_channels}-beta{'-'.join(f'{b:g}' for b in model.beta)}"
