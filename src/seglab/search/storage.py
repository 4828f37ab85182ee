"""Where a study lives: one ``--storage`` string for one process, one machine or many.

* ``sqlite:///optuna.db`` (default): a SQLite file in the project; one process at a time.
* a file path (``optuna.journal``, ``/shared/nfs/study.log``): Optuna's journal file, safe for
  several processes on one machine (appends under a file lock, no database server).
* ``postgresql://user:password@host/db`` (or ``mysql://...``): a database server, for workers
  on several machines.

Relative SQLite and journal paths resolve against the project root, not the cwd.

Every storage records a heartbeat per running trial, so a worker killed mid-trial (OOM, a
scheduler, ``kill -9``) is noticed by the next worker that starts a trial: after
``grace_period`` seconds of silence its trial is failed and re-queued with the same parameters
(:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`). Optuna's RDB storage has the
heartbeat built in; its journal storage does not (Optuna 5), so :class:`JournalHeartbeatStorage`
adds it with the same semantics, the heartbeat being a trial system attribute.
"""

from __future__ import annotations

import importlib.util
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import (
    BaseStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
)
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from seglab.errors import ConfigError

#: Trial system attribute holding the last heartbeat (seconds since the epoch).
HEARTBEAT_ATTR = "seglab:heartbeat"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
CONNECT_ATTEMPTS = 3

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the RDB storage's heartbeat: ``optimize`` records one every
    ``heartbeat_interval`` seconds from a thread, and fails (then calls back on) the RUNNING
    trials whose last heartbeat is older than ``grace_period`` before each new trial.

    Clocks are compared across processes, which is sound on one machine (the journal file's
    use case) and on machines whose clocks are synchronised.
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        *,
        heartbeat_interval: int,
        grace_period: int | None = None,
        stale_trial_callback: StaleCallback | None = None,
    ) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period or 2 * heartbeat_interval
        self._stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            pass  # another worker declared this trial stale and failed it meanwhile

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()  # died before its first heartbeat
            if last is not None and now - float(last) > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._stale_trial_callback


def storage_kind(url: str) -> str:
    """``sqlite``, ``journal`` or ``rdb`` (a database server) for a ``--storage`` string."""
    scheme = urlparse(url).scheme.split("+")[0]
    if scheme == "sqlite":
        return "sqlite"
    if scheme in RDB_SCHEMES:
        return "rdb"
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        return "journal"
    raise ConfigError(
        f"search storage '{url}': use sqlite:///FILE, a journal file path, or postgresql://..."
    )


def resolve_storage_url(url: str, root: Path) -> str:
    """``url`` with a relative SQLite or journal path made absolute against ``root``."""
    kind = storage_kind(url)
    if kind == "sqlite":
        prefix = "sqlite:///"
        path = url[len(prefix) :] if url.startswith(prefix) else ""
        if path and path != ":memory:" and not path.startswith("/"):
            return prefix + str((Path(root) / path).resolve())
        return url
    if kind == "journal":
        return str((Path(root) / url).resolve())
    return with_driver(url)


def with_driver(url: str) -> str:
    """A PostgreSQL URL without a driver names the one installed: SQLAlchemy 2.1 defaults to
    psycopg 3, the project ships psycopg2 (``postgresql://`` -> ``postgresql+psycopg2://``)."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or importlib.util.find_spec("psycopg"):
        return url
    return f"postgresql+psycopg2{sep}{rest}" if importlib.util.find_spec("psycopg2") else url


def open_storage(
    url: str,
    root: Path,
    *,
    heartbeat_interval: int,
    grace_period: int | None = None,
    max_retry: int | None = 3,
) -> BaseStorage:
    """The Optuna storage for ``url``, with heartbeats and retry of stale trials."""
    url = resolve_storage_url(url, root)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", ExperimentalWarning)
        return _open(url, heartbeat_interval, grace_period, max_retry)


def _open(
    url: str, heartbeat_interval: int, grace_period: int | None, max_retry: int | None
) -> BaseStorage:
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    if storage_kind(url) == "journal":
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalHeartbeatStorage(
            JournalFileBackend(str(path)),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            stale_trial_callback=retry,
        )
    engine_kwargs: dict[str, object] = {}
    if storage_kind(url) == "sqlite":
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # The heartbeat thread writes while the trial thread does: wait for the lock.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}  # survive a database restart between trials
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry,
            )
        except ImportError as exc:
            raise ConfigError(
                f"search storage '{_redact(url)}': database driver missing ({exc}); "
                "PostgreSQL needs psycopg2-binary (or psycopg)"
            ) from exc
        except Exception as exc:  # sqlalchemy errors: one clear line after the last attempt
            # Workers starting together on an empty database race to create Optuna's schema;
            # the losers fail on a duplicate table or type and find the schema there next time.
            if attempt == CONNECT_ATTEMPTS - 1:
                raise ConfigError(
                    f"search storage '{_redact(url)}': cannot open it ({exc})"
                ) from exc
            time.sleep(1.0 + random.random())
    raise AssertionError("unreachable")


def _redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def dashboard_command(url: str) -> str:
    """The shell command, run from the project folder, that opens the study's storage in
    optuna-dashboard (the optional extra ``dashboard``)."""
    return f"uv run optuna-dashboard {_redact(with_driver(url))}"
