"""MLflow runs for every stage: the one module in seglab that talks to MLflow.

A stage opens its run with :func:`tracked_run` and logs through :func:`log_metrics`,
:func:`log_figure`, :func:`log_artifact` and :func:`log_dict`. Each run is tagged with its lineage
(:mod:`seglab.tracking.lineage`) and its flattened params, lists its input datasets (the UI's
Datasets column), and ends FINISHED, FAILED (the block raised) or KILLED (Ctrl-C).

A stage killed outright (power cut, SIGKILL, a session limit) cannot end its run. Two rules keep
the history whole: a training that resumes from its work folder continues the run whose id it
kept there (one run, unbroken curves), and a run of the same name left RUNNING on this machine by
a process that no longer exists is ended as KILLED when its stage next starts.

Stores: the default ``sqlite:///mlflow.db`` resolves to a SQLite file in the project, and each
experiment keeps its artifacts in ``TrackingParams.artifacts`` inside the project, so nothing needs
a server. With an ``http(s)://`` tracking server the server decides where artifacts go.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlparse

import mlflow
from lightning_utilities.core.rank_zero import rank_zero_only
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, LifecycleStage, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.git_context import GitRunContext
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID
from pydantic import BaseModel

from seglab.config import TrackingParams, flatten
from seglab.errors import ConfigError
from seglab.tracking.lineage import lineage_tags

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

# The shortest param value any MLflow store has accepted (older servers and schemas: 500
# characters); clipping to it keeps a run loggable whichever server the lab points at.
PARAM_VALUE_LIMIT = 500
# Tracking URIs naming a server: it owns the artifact store, so experiments get no location here.
SERVER_SCHEMES = frozenset({"http", "https", "databricks", "databricks-uc"})
# Every run this module has logged into carries this tag; a launcher run that has it is taken.
LINEAGE_MARK = "git.commit"
# Where a run was started: a RUNNING run whose process is gone from this host is ended KILLED.
HOST_TAG, PID_TAG = "seglab.host", "seglab.pid"
# The file in a training's work folder that keeps the id of the run it logs into.
RUN_ID_FILE = "mlflow-run-id"


@dataclass(frozen=True)
class Launcher:
    """The run ``mlflow run`` created before starting this process, and the store holding it."""

    run_id: str
    tracking_uri: str | None


_launched: Launcher | None = None


def launcher() -> Launcher | None:
    """The ``mlflow run`` launch contract, if this process was started that way.

    This is the one place in seglab that reads environment variables, and only MLflow's own:
    ``mlflow run`` (an MLproject entry point) creates a run first, then starts the command with
    MLFLOW_RUN_ID and MLFLOW_TRACKING_URI (and MLFLOW_EXPERIMENT_ID) set. A stage that ignored
    them would log into a second run and leave the launcher's run empty. MLflow's own
    ``start_run()`` honours MLFLOW_RUN_ID implicitly (and deletes it from the environment); this
    module always passes run ids explicitly, so the rule is visible here instead.
    MLFLOW_EXPERIMENT_ID needs no reading: the launcher's run already belongs to its experiment.
    MLflow's ``end_run()`` deletes MLFLOW_RUN_ID, so the launch is remembered for the rest of the
    process: a later run still goes to the launcher's store, as a child of the launcher's run.
    """
    global _launched
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        _launched = Launcher(run_id, os.environ.get("MLFLOW_TRACKING_URI") or None)
    return _launched


def resolve_uri(uri: str, root: Path) -> str:
    """Make a relative SQLite URI or a plain folder absolute against the project ``root``.

    ``sqlite:///mlflow.db`` would otherwise mean "relative to whatever the cwd is"; servers and
    absolute URIs are returned unchanged.
    """
    scheme = urlparse(uri).scheme
    prefix = "sqlite:///"
    if scheme == "sqlite" and uri.startswith(prefix):
        path = uri[len(prefix) :]
        if path and path != ":memory:" and not path.startswith("/"):
            return prefix + str((Path(root) / path).resolve())
        return uri
    if not scheme:
        return (Path(root) / uri).resolve().as_uri()
    return uri


def code_commit(tracking: TrackingParams, root: Path, filter_string: str) -> str | None:
    """``<commit>[+dirty]`` of the seglab code behind the latest run matching ``filter_string``
    in any experiment (its ``seglab.git.*`` tags, see :mod:`seglab.tracking.lineage`), so a
    report names the code that made a figure even when the project is not a git repository.
    None without a store (none is created), a matching run, or the tag (an older run)."""
    uri = resolve_uri(tracking.uri, root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string, order_by=["attributes.start_time DESC"], max_results=1
    )
    tags = runs[0].data.tags if runs else {}
    commit = tags.get("seglab.git.commit", "unknown")
    if commit == "unknown":
        return None
    return f"{commit}{'+dirty' if tags.get('seglab.git.dirty') == 'true' else ''}"


def configure(tracking: TrackingParams, root: Path) -> str:
    """Point MLflow at the project's store and return the resolved tracking URI.

    Under ``mlflow run`` the launcher's store wins over ``tracking.uri``: the run it created lives
    there (see :func:`launcher`).
    """
    launched = launcher()
    if launched is not None and launched.tracking_uri:
        uri = resolve_uri(launched.tracking_uri, root)
        if uri != resolve_uri(tracking.uri, root):
            logger.info("mlflow run launched this process: tracking to %s, not tracking.uri", uri)
    else:
        uri = resolve_uri(tracking.uri, root)
    if uri.startswith("sqlite:////"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def artifact_location(tracking: TrackingParams, root: Path, uri: str) -> str | None:
    """Where a new experiment keeps artifacts: a folder in the project, unless a server decides."""
    if urlparse(uri).scheme in SERVER_SCHEMES:
        return None
    if len(urlparse(tracking.artifacts).scheme) > 1:  # already a URI (s3://, file://...)
        return tracking.artifacts
    return (Path(root) / tracking.artifacts).resolve().as_uri()


def ensure_experiment(tracking: TrackingParams, name: str, *, root: Path) -> str:
    """Id of experiment ``name``, created with its artifacts in the project if it is new.

    An experiment that ``mlflow run --experiment-name`` creates gets MLflow's default artifact
    folder instead; creating the study's experiments first (this function) avoids that.
    """
    uri = configure(tracking, root)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_location(tracking, root, uri)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            experiment = client.get_experiment_by_name(name)  # another worker created it
            if experiment is None:
                raise
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        raise ConfigError(
            f"MLflow experiment '{name}' is deleted in {uri}: "
            "restore it (mlflow experiments restore) or purge it (mlflow gc)"
        )
    return experiment.experiment_id


def _flatten_mapping(params: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, BaseModel):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, Mapping):
            out.update(_flatten_mapping(value, f"{name}."))
        else:
            out[name] = value
    return out


def flatten_params(params: BaseModel | Mapping[str, object]) -> dict[str, str]:
    """Dotted keys and string values, clipped to :data:`PARAM_VALUE_LIMIT` characters."""
    flat = flatten(params) if isinstance(params, BaseModel) else _flatten_mapping(params)
    out: dict[str, str] = {}
    for key, value in flat.items():
        text = str(value)
        if len(text) > PARAM_VALUE_LIMIT:
            text = text[: PARAM_VALUE_LIMIT - 3] + "..."
        out[key] = text
    return out


def _create_run(
    client: MlflowClient, experiment_id: str, run_name: str, parent_run_id: str | None
) -> str:
    # MLflow's context tags (user, source, ...) minus its git provider: that one looks at the
    # script's repository, the lineage tags at the project's.
    tags = {MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {}
    tags = resolve_tags(tags, ignore=[GitRunContext])
    return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def _end(run_id: str, status: RunStatus | int) -> None:
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(RunStatus.to_string(status))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def end_orphaned_runs(client: MlflowClient, experiment_id: str, run_name: str) -> list[str]:
    """End as KILLED the runs named ``run_name`` left RUNNING by a process of this host that no
    longer exists (a killed stage cannot end its own run). Returns their ids."""
    host = socket.gethostname()
    ended = []
    for run in client.search_runs(
        [experiment_id],
        filter_string=f"attributes.run_name = '{run_name}' and attributes.status = 'RUNNING'",
    ):
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) == host and pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            ended.append(run.info.run_id)
    if ended:
        logger.warning("ended %d orphaned '%s' run(s) as KILLED: %s", len(ended), run_name, ended)
    return ended


def _resumable(client: MlflowClient, folder: Path | None, experiment_id: str) -> str | None:
    """The run id kept in a work folder, if that run exists in ``experiment_id``: the run a
    resumed training goes on logging into. Its status does not matter: a stage removes its work
    folders when it completes, so a folder that is still there belongs to an unfinished stage
    (a fold whose run finished before the stage was killed is reopened, not logged twice)."""
    path = folder / RUN_ID_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None
    run_id = path.read_text().strip()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return None
    return run_id


def _keep_run_id(folder: Path, run_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RUN_ID_FILE}.tmp"
    tmp.write_text(run_id + "\n")
    tmp.replace(folder / RUN_ID_FILE)


def _dataset_inputs(datasets: Mapping[str, Path], tags: Mapping[str, str]) -> list[DatasetInput]:
    """The DVC-versioned inputs as MLflow datasets: name, DVC md5 as digest, the folder as source
    and, where the dataset records its splits (``meta.json``), their sizes as its profile."""
    inputs = []
    for name in datasets:
        path = tags[f"data.{name}.path"]
        profile: dict[str, int] = {}
        meta = Path(path) / "meta.json"
        if meta.is_file():
            try:
                splits = json.loads(meta.read_text()).get("splits", {})
            except (OSError, ValueError):
                splits = {}
            if isinstance(splits, Mapping):
                profile = {
                    f"{k}_patients": len(v) for k, v in splits.items() if isinstance(v, list)
                }
        dataset = Dataset(
            name=name,
            digest=tags[f"data.{name}.dvc_md5"],
            source_type="local",
            source=json.dumps({"uri": path}),
            profile=json.dumps(profile) if profile else None,
        )
        inputs.append(DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, "training")]))
    return inputs


@dataclass(frozen=True)
class _NoRunInfo:
    run_id: None = None


@dataclass(frozen=True)
class WorkerRun:
    """What :func:`tracked_run` yields in a distributed worker process: a run with no id."""

    info: _NoRunInfo = _NoRunInfo()


def is_worker_process() -> bool:
    """True in a distributed training's process of global rank > 0: the rank Lightning keeps on
    ``rank_zero_only`` (read from the launcher's environment, Lightning's own DDP launch, torchrun
    or SLURM, when Lightning is imported; set again by the Trainer). Read from the small
    ``lightning_utilities`` so that stages that train nothing (promotion, reports) need not import
    Lightning (seconds); a process without Lightning runs no distributed training: rank 0."""
    return getattr(rank_zero_only, "rank", 0) != 0


@contextmanager
def tracked_run(
    tracking: TrackingParams,
    experiment: str,
    run_name: str,
    *,
    root: Path,
    params: BaseModel | Mapping[str, object] | None = None,
    datasets: Mapping[str, Path] | None = None,
    params_file: Path | None = None,
    tags: Mapping[str, str] | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    resume: Path | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open (or, under ``mlflow run``, adopt) the run a stage logs into; end it with its outcome.

    ``nested=True`` makes the run a child of the active run; ``parent_run_id`` makes it a child
    of that run even when it is not active here (an Optuna worker in another process). Under
    ``mlflow run`` the first top-level run adopts the launcher's run; later ones become its
    children, so the launcher's run never stays empty and none is logged twice.

    ``resume``: the training's work folder. The run's id is kept there, so a stage killed and
    started again continues that run instead of opening a second one.

    In a distributed training's worker process (global rank > 0) nothing is opened: the block
    gets a :class:`WorkerRun` whose id is None, so the worker trains without logging and rank 0's
    run is the only one.
    """
    if is_worker_process():
        yield cast(mlflow.ActiveRun, WorkerRun())
        return
    root = Path(root)
    uri = configure(tracking, root)
    client = MlflowClient(uri)
    run_tags = {**lineage_tags(root, datasets or {}, params_file), **(tags or {})}

    active = mlflow.active_run()
    if active is not None:
        if not nested:
            raise RuntimeError(f"run {active.info.run_id} is active; pass nested=True for a child")
        if parent_run_id not in (None, active.info.run_id):
            raise RuntimeError(f"parent {parent_run_id} is not the active run {active.info.run_id}")
        parent_run_id = active.info.run_id

    run_id: str | None = None
    launched = launcher()
    if launched is not None and active is None and parent_run_id is None:
        try:
            launched_run = client.get_run(launched.run_id)
        except MlflowException as exc:
            raise ConfigError(
                f"MLFLOW_RUN_ID {launched.run_id} (set by mlflow run) is not a run in {uri}"
            ) from exc
        if nested or LINEAGE_MARK in launched_run.data.tags:
            parent_run_id = launched.run_id
        else:
            run_id = launched.run_id
            launched_in = client.get_experiment(launched_run.info.experiment_id).name
            if launched_in != experiment:
                logger.warning(
                    "mlflow run started run %s in experiment '%s', not '%s'; logging into it "
                    "(pass --experiment-name %s to mlflow run)",
                    run_id,
                    launched_in,
                    experiment,
                    experiment,
                )
    if run_id is None:
        experiment_id = ensure_experiment(tracking, experiment, root=root)
        end_orphaned_runs(client, experiment_id, run_name)
        run_id = _resumable(client, resume, experiment_id)
        if run_id is not None:
            logger.info("resuming MLflow run %s (id kept in %s)", run_id, resume)
        else:
            run_id = _create_run(client, experiment_id, run_name, parent_run_id)
            if resume is not None:
                _keep_run_id(resume, run_id)

    run_tags.update({HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())})
    client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in run_tags.items()])
    if datasets:
        client.log_inputs(run_id, datasets=_dataset_inputs(datasets, run_tags))
    run = mlflow.start_run(run_id=run_id, run_name=run_name, nested=active is not None)
    try:
        if params is not None:
            mlflow.log_params(flatten_params(params), run_id=run_id)
        yield run
    except KeyboardInterrupt:
        _end(run_id, RunStatus.KILLED)
        raise
    except BaseException:
        _end(run_id, RunStatus.FAILED)
        raise
    _end(run_id, RunStatus.FINISHED)


def _active_run_id() -> str:
    """The run a helper logs into; refusing here keeps MLflow from starting a stray run."""
    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("no active MLflow run: log inside seglab.tracking.tracked_run")
    return active.info.run_id


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log metrics (keys as in the architecture's metric names) to the active run."""
    mlflow.log_metrics(
        {key: float(value) for key, value in metrics.items()}, step=step, run_id=_active_run_id()
    )


def set_tags(tags: Mapping[str, object]) -> None:
    """Tag the active run (choices made while it ran, e.g. a segmenter's post-processing)."""
    _active_run_id()
    mlflow.set_tags({key: str(value) for key, value in tags.items()})


def log_figure(fig: Figure, name: str) -> None:
    """Save a matplotlib figure as artifact ``name`` (e.g. ``plots/dice.png``) of the active run."""
    _active_run_id()
    mlflow.log_figure(fig, name)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    """Copy a file, or a folder under its own name, into the active run's artifacts."""
    run_id = _active_run_id()
    path = Path(path)
    if path.is_dir():
        sub = f"{artifact_path}/{path.name}" if artifact_path else path.name
        mlflow.log_artifacts(str(path), artifact_path=sub, run_id=run_id)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path, run_id=run_id)


def log_dict(obj: Mapping[str, object] | list[object], name: str) -> None:
    """Write ``obj`` as JSON or YAML (by ``name``'s suffix) into the active run's artifacts."""
    mlflow.log_dict(obj, name, run_id=_active_run_id())  # type: ignore[arg-type]
