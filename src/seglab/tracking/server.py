"""`seglab server`: the MLflow tracking server (UI, REST API, proxied artifacts) for a team.

By default it serves the project's own store, the SQLite file of ``tracking.uri`` and the
artifact folder ``tracking.artifacts``, on 127.0.0.1, so one person can browse the experiments
and registry. For a team, ``tracking.server`` names a PostgreSQL database as the backend store
and an object store as the artifact destination; clients then set ``tracking.uri`` to the
server's ``http://`` address and send artifacts through it (``--serve-artifacts``), so they need
no credentials for the bucket.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlparse

from pydantic import ValidationError

from seglab.config import ServerParams, TrackingParams
from seglab.errors import ConfigError
from seglab.tracking.runs import SERVER_SCHEMES, resolve_uri


def backend_store(tracking: TrackingParams, root: Path) -> str:
    """The database the server keeps runs and registry in (absolute for a SQLite file)."""
    backend = tracking.server.backend_store_uri or tracking.uri
    if urlparse(backend).scheme in SERVER_SCHEMES:
        raise ConfigError(
            f"tracking.uri is a server ({backend}), not a store to serve: set "
            "tracking.server.backend_store_uri (e.g. postgresql://user@db-host/mlflow)"
        )
    return resolve_uri(backend, root)


def artifacts_destination(tracking: TrackingParams, root: Path) -> str:
    """Where the server puts artifacts: a URI as given (s3://, gs://...), else a project folder."""
    destination = tracking.server.artifacts_destination or tracking.artifacts
    if len(urlparse(destination).scheme) > 1:
        return destination
    return str((Path(root) / destination).resolve())


def server_url(tracking: TrackingParams) -> str:
    """The address clients put in ``tracking.uri`` (host as bound; 0.0.0.0 means any address)."""
    server = tracking.server
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"http://{host}:{server.port}"


def server_command(tracking: TrackingParams, root: Path) -> list[str]:
    """The ``mlflow server`` command line for ``tracking.server``."""
    server = tracking.server
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store(tracking, root),
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination(tracking, root),
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--workers",
        str(server.workers),
    ]
    if server.allowed_hosts:
        command += ["--allowed-hosts", server.allowed_hosts]
    return command


def serve(tracking: TrackingParams, root: Path) -> NoReturn:
    """Become the server: this process is replaced by ``mlflow server``, so Ctrl-C and signals
    reach it directly and nothing is left running behind it."""
    command = server_command(tracking, root)
    backend = backend_store(tracking, root)
    if backend.startswith("sqlite:////"):
        Path(backend.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    destination = artifacts_destination(tracking, root)
    if not urlparse(destination).scheme:
        Path(destination).mkdir(parents=True, exist_ok=True)
    print(
        f"serving {server_url(tracking)}  (store {backend}, artifacts {destination})",
        flush=True,
    )
    os.execv(command[0], command)


def with_overrides(tracking: TrackingParams, overrides: dict[str, object]) -> TrackingParams:
    """``tracking`` with command-line values replacing those of ``tracking.server``."""
    try:
        server = ServerParams.model_validate({**tracking.server.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"server settings: {problems}") from exc
    return tracking.model_copy(update={"server": server})
