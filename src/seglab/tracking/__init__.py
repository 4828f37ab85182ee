"""MLflow runs, lineage and (later) the model registry: the only layer that talks to MLflow.

The names below are imported on first use, so that importing a light submodule (``seglab
server``'s checks of its port and host) does not wait seconds for MLflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seglab.tracking.lineage import (
        dvc_hash,
        git_commit,
        git_dirty,
        lineage_tags,
        package_versions,
        params_hash,
    )
    from seglab.tracking.runs import (
        configure,
        ensure_experiment,
        log_artifact,
        log_dict,
        log_figure,
        log_metrics,
        set_tags,
        tracked_run,
    )

__all__ = [
    "configure",
    "dvc_hash",
    "ensure_experiment",
    "git_commit",
    "git_dirty",
    "lineage_tags",
    "log_artifact",
    "log_dict",
    "log_figure",
    "log_metrics",
    "package_versions",
    "params_hash",
    "set_tags",
    "tracked_run",
]
_LINEAGE = {
    "dvc_hash",
    "git_commit",
    "git_dirty",
    "lineage_tags",
    "package_versions",
    "params_hash",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = "lineage" if name in _LINEAGE else "runs"
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
