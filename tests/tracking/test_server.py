"""`seglab server`: the command it runs, and a real server on a loopback port used end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from seglab.config import ServerParams, TrackingParams
from seglab.errors import ConfigError, SeglabError
from seglab.tracking import registry, runs
from seglab.tracking import server as server_module
from seglab.tracking.registry import load_model, promote, promotion_history
from seglab.tracking.runs import log_metrics, tracked_run
from seglab.tracking.server import (
    check_exposure,
    check_port,
    serve,
    server_command,
    server_url,
    with_overrides,
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runs, "_launched", None)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_default_command_serves_the_projects_store_on_loopback(tmp_path: Path) -> None:
    command = server_command(TrackingParams(), tmp_path)
    assert command[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert option(command, "--backend-store-uri") == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert option(command, "--artifacts-destination") == str(tmp_path.resolve() / "mlartifacts")
    assert "--serve-artifacts" in command
    assert option(command, "--host") == "127.0.0.1"
    assert option(command, "--port") == "5000"
    assert "--allowed-hosts" not in command
    assert server_url(TrackingParams()) == "http://127.0.0.1:5000"


def test_team_settings_pass_through(tmp_path: Path) -> None:
    team = TrackingParams(
        uri="http://mlflow.lab:5000",  # what the clients use
        server=ServerParams(
            host="0.0.0.0",
            port=8080,
            workers=2,
            backend_store_uri="postgresql://mlflow@db.lab/mlflow",
            artifacts_destination="s3://lab-bucket/mlflow",
            allowed_hosts="mlflow.lab,mlflow.lab:8080",
        ),
    )
    command = server_command(team, tmp_path)
    assert option(command, "--backend-store-uri") == "postgresql://mlflow@db.lab/mlflow"
    assert option(command, "--artifacts-destination") == "s3://lab-bucket/mlflow"
    assert option(command, "--host") == "0.0.0.0"
    assert option(command, "--workers") == "2"
    assert option(command, "--allowed-hosts") == "mlflow.lab,mlflow.lab:8080"

    with pytest.raises(ConfigError, match="set tracking.server.backend_store_uri"):
        server_command(TrackingParams(uri="http://mlflow.lab:5000"), tmp_path)
    overridden = with_overrides(TrackingParams(), {"port": 6001, "host": "::1"})
    assert server_url(overridden) == "http://[::1]:6001"
    with pytest.raises(ConfigError, match="server settings: port: Input should be less"):
        with_overrides(TrackingParams(), {"port": 70000})


def test_an_exposed_host_needs_allowed_hosts_or_the_explicit_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_SERVER_ALLOWED_HOSTS", raising=False)
    exposed = TrackingParams(server=ServerParams(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="host 0.0.0.0 exposes the server .* --allow-any-host"):
        check_exposure(exposed)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(TrackingParams(server=ServerParams(host=host)))
    check_exposure(
        exposed.model_copy(update={"server": ServerParams(host="0.0.0.0", allowed_hosts="lab")})
    )
    check_exposure(exposed, allow_any_host=True)
    assert option(server_command(exposed, tmp_path, allow_any_host=True), "--allowed-hosts") == "*"
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", "mlflow.lab")  # MLflow's own setting
    check_exposure(exposed)
    assert "--allowed-hosts" not in server_command(exposed, tmp_path, allow_any_host=True)
    # the URL printed is one clients can use: this machine's name for a wildcard bind
    assert server_url(exposed) == f"http://{socket.gethostname()}:5000"


def seglab_server(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`seglab server ARGS` in its own process group, killed (group and all) after ``timeout``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "seglab.cli", "server", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"still running after {timeout}s: {out}{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_exposing_the_server_without_allowed_hosts_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("tracking:\n  server:\n    workers: 1\n")
    env_free = {k: v for k, v in os.environ.items() if k != "MLFLOW_SERVER_ALLOWED_HOSTS"}
    proc = subprocess.run(
        [sys.executable, "-m", "seglab.cli", "server", "--host", "0.0.0.0", "--port",
         str(free_loopback_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env_free, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "seglab: error: host 0.0.0.0 exposes the server beyond this machine with no "
        "tracking.server.allowed_hosts: set it (or --allowed-hosts, e.g. "
        f"mlflow.lab.org,mlflow.lab.org:{proc.args[-1]}), or pass --allow-any-host to accept "
        "any Host header"
    ]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()


def test_a_taken_port_fails_at_once_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("tracking:\n  server:\n    workers: 1\n")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = seglab_server(["--port", str(port)], tmp_path, timeout=300)
        with pytest.raises(SeglabError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port("127.0.0.1", port)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"seglab: error: port {port} on 127.0.0.1 is already in use (another server?): stop it "
        "or pass --port"
    ]
    assert not (tmp_path / "mlflow.db").exists()  # refused before MLflow was started
    check_port("127.0.0.1", port)  # free again


@pytest.mark.parametrize(("script", "code"), [("pass", 1), ("raise SystemExit(3)", 3)])
def test_a_server_that_stops_by_itself_fails_the_command(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    script: str,
    code: int,
) -> None:
    # MLflow exits 0 when uvicorn cannot bind (a port taken between the check and its bind)
    monkeypatch.setattr(
        server_module, "server_command", lambda *a, **k: [sys.executable, "-c", script]
    )
    params = TrackingParams(server=ServerParams(port=free_loopback_port()))
    assert serve(params, tmp_path) == code
    err = capsys.readouterr().err
    assert "seglab: error: mlflow server" in err
    assert ("stopped by itself" in err) == (code == 1)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_stop_signal_stops_the_server_and_everything_it_started(tmp_path: Path) -> None:
    # the server stand-in starts a worker of its own, as mlflow starts uvicorn and its workers
    pids = tmp_path / "pids"
    server = (
        "import subprocess, sys, time, pathlib; "
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"pathlib.Path({str(pids)!r}).write_text(f'{{w.pid}}'); time.sleep(300)"
    )
    runner = (
        "import sys; from seglab.tracking.server import _run_child; "
        f"sys.exit(_run_child([sys.executable, '-c', {server!r}], grace=60))"
    )
    proc = subprocess.Popen([sys.executable, "-c", runner], start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not pids.exists() or not pids.read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        worker = int(pids.read_text())
        os.kill(proc.pid, signal.SIGTERM)  # this command only, as `kill PID` would
        assert proc.wait(timeout=120) == 0
        assert not alive(worker)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`seglab server` on a free loopback port over a fresh project store; always stopped."""
    project = tmp_path / "served"
    project.mkdir()
    port = free_loopback_port()
    params = project / "params.yaml"
    params.write_text("tracking:\n  server:\n    workers: 1\n")
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seglab.cli",
            "server",
            "--port",
            str(port),
            "--params",
            str(params),
        ],
        cwd=project,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the uvicorn workers stop with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine takes minutes to start it
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        yield url, project
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_a_team_logs_registers_and_loads_by_alias_through_the_server(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, project = server
    client_root = tmp_path / "client"  # a team member's checkout, elsewhere
    client_root.mkdir()
    tracking = TrackingParams(uri=url)
    net = torch.nn.Linear(4, 2)
    with tracked_run(tracking, "acdc-nvae", "through-server", root=client_root) as run:
        log_metrics({"dice_mean": 0.8})
        mlflow.pytorch.log_model(
            net,
            name="model",
            registered_model_name="acdc-nvae",
            input_example=np.zeros((2, 4), dtype=np.float32),
            pip_requirements=["torch"],
        )
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    client.set_model_version_tag("acdc-nvae", "1", registry.EVAL_SPLIT_TAG, "test")

    decision = promote("acdc-nvae", tracking, client_root)
    assert decision.outcome == "promoted"
    loaded = load_model("models:/acdc-nvae@champion", tracking, client_root)
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded(x), net(x))
    assert [
        d.candidate.version for d in promotion_history("acdc-nvae", tracking, client_root).decisions
    ] == ["1"]

    # the server kept everything in the project: its SQLite store and its artifact folder
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"
    assert done.data.tags["git.commit"] == "unknown"  # the client checkout is not a repository
    assert done.info.artifact_uri.startswith("mlflow-artifacts:")
    assert (project / "mlflow.db").is_file()
    stored = list((project / "mlartifacts").rglob("MLmodel"))
    assert stored, "the model's files are not in the served artifact folder"
    assert not (client_root / "mlflow.db").exists() and not (client_root / "mlartifacts").exists()
