"""MLflow runs, lineage and (later) the model registry: the only layer that talks to MLflow."""

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
    "tracked_run",
]
