"""`seglab server`: the MLflow tracking server (UI, REST API, proxied artifacts) for a team.

By default it serves the project's own store, the SQLite file of ``tracking.uri`` and the
artifact folder ``tracking.artifacts``, on 127.0.0.1, so one person can browse the experiments
and registry. For a team, ``tracking.server`` names a PostgreSQL database as the backend store
and an object store as the artifact destination; clients then set ``tracking.uri`` to the
server's ``http://`` address and send artifacts through it (``--serve-artifacts``), so they need
no credentials for the bucket.

Before it starts anything, :func:`serve` refuses what would fail or expose the server by
mistake: a port already taken (checked by binding it, so this fails at once instead of after
MLflow's minute of start-up, after which MLflow itself exits 0) and a non-loopback ``host``
without ``allowed_hosts`` (MLflow would then answer any private-network ``Host``), unless the
user says so with ``--allow-any-host``. The server runs as a child whose failure is this
command's failure: a non-zero exit code passes through, and a server that stops by itself
(exit 0 without being asked to) is an error too.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from pydantic import ValidationError

from seglab.config import ServerParams, TrackingParams
from seglab.errors import ConfigError, SeglabError

#: ``--allowed-hosts`` value of ``--allow-any-host``: MLflow accepts every Host header.
ANY_HOST = "*"
#: MLflow reads its allowed hosts from here when ``--allowed-hosts`` is not given.
ALLOWED_HOSTS_ENV = "MLFLOW_SERVER_ALLOWED_HOSTS"
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def backend_store(tracking: TrackingParams, root: Path) -> str:
    """The database the server keeps runs and registry in (absolute for a SQLite file)."""
    # Imported here: seglab.tracking.runs imports MLflow, seconds that the refusals of
    # serve() (port taken, host exposed) need not wait for.
    from seglab.tracking.runs import SERVER_SCHEMES, resolve_uri

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
    """The address clients put in ``tracking.uri``: the host as bound, or for a wildcard bind
    (``0.0.0.0``, ``::``: every interface) this machine's host name."""
    server = tracking.server
    host = socket.gethostname() if server.host in _WILDCARD_HOSTS else server.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.port}"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (localhost, 127.x, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it resolves to an address others can reach
        return False


def check_exposure(tracking: TrackingParams, *, allow_any_host: bool = False) -> None:
    """Refuse to bind a non-loopback host without ``allowed_hosts`` (nor MLflow's environment
    variable), unless ``allow_any_host`` says the user means it."""
    server = tracking.server
    if is_loopback(server.host) or server.allowed_hosts or os.environ.get(ALLOWED_HOSTS_ENV):
        return
    if allow_any_host:
        return
    raise ConfigError(
        f"host {server.host} exposes the server beyond this machine with no "
        "tracking.server.allowed_hosts: set it (or --allowed-hosts, e.g. "
        f"mlflow.lab.org,mlflow.lab.org:{server.port}), or pass --allow-any-host to accept any "
        "Host header"
    )


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` as the server will (``SO_REUSEADDR``, as uvicorn sets it) and let go;
    a port in use or an address not of this machine is a :class:`SeglabError` at once."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise SeglabError(f"host {host}: cannot resolve it ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SeglabError(
                    f"port {port} on {host} is already in use (another server?): stop it or "
                    "pass --port"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise SeglabError(f"host {host} is not an address of this machine") from None
            raise SeglabError(f"cannot bind {host}:{port} ({exc.strerror})") from None


def server_command(
    tracking: TrackingParams, root: Path, *, allow_any_host: bool = False
) -> list[str]:
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
    elif allow_any_host and not os.environ.get(ALLOWED_HOSTS_ENV):
        command += ["--allowed-hosts", ANY_HOST]
    return command


def serve(tracking: TrackingParams, root: Path, *, allow_any_host: bool = False) -> int:
    """Run ``mlflow server`` until it stops; return the exit code for this command.

    Refused at once (:class:`SeglabError`, nothing started) when the host would be exposed
    without ``allowed_hosts`` (see :func:`check_exposure`) or the port is taken. SIGINT,
    SIGTERM and SIGHUP are passed on to the server; its exit code then is ours. A server that
    exits by itself fails this command: with its own code, or 1 where MLflow says 0 (it does so
    when uvicorn cannot bind the port).
    """
    server = tracking.server
    check_exposure(tracking, allow_any_host=allow_any_host)
    check_port(server.host, server.port)
    command = server_command(tracking, root, allow_any_host=allow_any_host)
    backend = backend_store(tracking, root)
    if backend.startswith("sqlite:////"):
        Path(backend.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    destination = artifacts_destination(tracking, root)
    if not urlparse(destination).scheme:
        Path(destination).mkdir(parents=True, exist_ok=True)
    hosts = server.allowed_hosts or os.environ.get(ALLOWED_HOSTS_ENV)
    if hosts is None:
        hosts = "any" if allow_any_host else "localhost and private addresses (MLflow's default)"
    print(
        f"serving {server_url(tracking)}  (bound to {server.host}:{server.port}; Host headers "
        f"accepted: {hosts}; store {backend}, artifacts {destination})",
        flush=True,
    )
    return _run_child(command)


def _run_child(command: list[str], grace: float = 30.0) -> int:
    """Run ``command`` in a process group of its own, passing each stop signal (Ctrl-C,
    SIGTERM, SIGHUP) on to the whole group once; when it ends, stop what is left of the group
    (MLflow's uvicorn and its workers) within ``grace`` seconds. Returns its exit code, or 1
    where it stopped unasked with 0."""
    stopping: list[int] = []
    group: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        if group:
            _signal_group(group[0], signum)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in stops}
    try:
        proc = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent())
        group.append(proc.pid)
        if stopping:  # a signal came before the group existed
            _signal_group(proc.pid, stopping[-1])
        code = proc.wait()
        _reap_group(proc.pid, grace, terminate=not stopping)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:  # asked to stop: a clean stop (or death by the signal passed on) is success
        return 0 if code in (0, *(-sig for sig in stops)) else code
    if code < 0:
        print(f"seglab: error: mlflow server was killed by signal {-code}", file=sys.stderr)
        return 128 - code
    if code == 0:
        print("seglab: error: mlflow server stopped by itself (see its log above)", file=sys.stderr)
        return 1
    print(f"seglab: error: mlflow server failed with exit code {code}", file=sys.stderr)
    return code


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; False when no member is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user; nothing more we can do
        return False
    return True


def _reap_group(pgid: int, grace: float, *, terminate: bool) -> None:
    """Wait up to ``grace`` seconds for the rest of the group to stop (sent SIGTERM first when
    ``terminate``; else it has had the stop signal already), then SIGKILL what remains."""
    deadline = time.monotonic() + grace
    if terminate:
        _signal_group(pgid, signal.SIGTERM)
    while _signal_group(pgid, 0):
        if time.monotonic() > deadline:
            _signal_group(pgid, signal.SIGKILL)
            return
        time.sleep(0.2)


def _die_with_parent() -> Callable[[], None] | None:
    """For the child on Linux: ask for SIGTERM when this command dies, even by SIGKILL, so no
    server is left running behind it (prepared here: the child only calls it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return arm


def with_overrides(tracking: TrackingParams, overrides: dict[str, object]) -> TrackingParams:
    """``tracking`` with command-line values replacing those of ``tracking.server``."""
    try:
        server = ServerParams.model_validate({**tracking.server.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"server settings: {problems}") from exc
    return tracking.model_copy(update={"server": server})
