"""A throw-away PostgreSQL server for the search tests (installed with apt-get if missing)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

APT_TIMEOUT_S = 900


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(versions[0]).parent if versions else None


def _install_postgres() -> str | None:
    """Install PostgreSQL with apt-get (root on Debian/Ubuntu); the reason when impossible."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "PostgreSQL is not installed and apt-get cannot install it here (not root/Debian)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "postgresql"],
    ):
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` timed out"
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {done.stderr.strip()[-300:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg2://`` URL of a fresh database on a server started for this module
    (loopback port, socket and data in a temporary folder; run as ``postgres`` under root)."""
    pytest.importorskip("psycopg2", reason="psycopg2 (psycopg2-binary) is not installed")
    bindir = _pg_bindir()
    if bindir is None:
        reason = _install_postgres()
        bindir = _pg_bindir()
        if bindir is None:
            pytest.skip(reason or "PostgreSQL binaries not found after installing")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="seglab-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as postgres")
        try:
            shutil.chown(folder, user="postgres", group="postgres")
        except (LookupError, PermissionError) as exc:
            pytest.skip(f"no postgres user to run the server as ({exc})")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, log, port = folder / "data", folder / "server.log", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip(f"could not start PostgreSQL ({args[0]}): {done.stderr.strip()[-300:]}")

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "seglab", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "seglab", "optuna")
        yield f"postgresql+psycopg2://seglab@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(folder, ignore_errors=True)
