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
from seglab.errors import ConfigError
from seglab.tracking import registry, runs
from seglab.tracking.registry import load_model, promote, promotion_history
from seglab.tracking.runs import log_metrics, tracked_run
from seglab.tracking.server import server_command, server_url, with_overrides


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
