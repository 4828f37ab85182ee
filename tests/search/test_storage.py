"""Storage URLs, the journal file's heartbeat, and one clear line for a bad storage."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from seglab.errors import ConfigError
from seglab.search.storage import (
    HEARTBEAT_ATTR,
    JournalHeartbeatStorage,
    dashboard_command,
    open_storage,
    resolve_storage_url,
    storage_kind,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_kinds_and_project_relative_paths(tmp_path: Path) -> None:
    assert storage_kind("sqlite:///optuna.db") == "sqlite"
    assert storage_kind("optuna.journal") == storage_kind("/nfs/s.log") == "journal"
    assert storage_kind("postgresql+psycopg2://u@h/db") == "rdb"
    assert resolve_storage_url("sqlite:///optuna.db", tmp_path) == f"sqlite:///{tmp_path}/optuna.db"
    assert resolve_storage_url("sqlite:////abs/o.db", tmp_path) == "sqlite:////abs/o.db"
    assert resolve_storage_url("sub/o.journal", tmp_path) == str(tmp_path / "sub/o.journal")
    # SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://; the project has psycopg2.
    assert resolve_storage_url("postgresql://u@h/db", tmp_path) == "postgresql+psycopg2://u@h/db"
    assert resolve_storage_url("mysql://u@h/db", tmp_path) == "mysql://u@h/db"
    with pytest.raises(ConfigError, match="use sqlite"):
        storage_kind("redis://localhost")


def test_open_storage_kinds_have_heartbeats(tmp_path: Path) -> None:
    journal = open_storage("j/optuna.journal", tmp_path, heartbeat_interval=7)
    sqlite = open_storage("sqlite:///optuna.db", tmp_path, heartbeat_interval=7, grace_period=9)
    assert isinstance(journal, JournalHeartbeatStorage) and (tmp_path / "j/optuna.journal").exists()
    assert isinstance(sqlite, RDBStorage) and (tmp_path / "optuna.db").exists()
    for storage in (journal, sqlite):
        assert storage.get_heartbeat_interval() == 7
        assert storage.get_heartbeat_stale_trial_callback() is not None


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_storage(
            "postgresql://seglab:secret@127.0.0.1:1/optuna", tmp_path, heartbeat_interval=1
        )
    message = str(info.value)
    assert "cannot open it" in message and "\n" not in message.split(" (")[0]
    assert "secret" not in message.split("(")[0] and "***" in message


def test_dashboard_command_hides_passwords() -> None:
    assert dashboard_command("sqlite:///optuna.db") == "uv run optuna-dashboard sqlite:///optuna.db"
    assert "pw" not in dashboard_command("postgresql://me:pw@db/optuna")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_journal_heartbeat_fails_and_requeues_a_silent_trial(tmp_path: Path) -> None:
    storage = open_storage(
        "optuna.journal", tmp_path, heartbeat_interval=1, grace_period=1, max_retry=1
    )
    study = optuna.create_study(study_name="s", storage=storage)
    alive = study.ask()
    alive.suggest_int("x", 0, 10)
    storage.record_heartbeat(alive._trial_id)
    assert storage.get_trial_system_attrs(alive._trial_id)[HEARTBEAT_ATTR] > 0
    assert storage._get_stale_trial_ids(study._study_id) == []  # fresh heartbeat
    time.sleep(1.3)
    assert storage._get_stale_trial_ids(study._study_id) == [alive._trial_id]

    optuna.storages.fail_stale_trials(study)  # what every worker does before a trial
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params
    assert trials[1].system_attrs["failed_trial"] == 0
    storage.record_heartbeat(alive._trial_id)  # a late heartbeat of the dead trial is harmless

    # A second worker process reading the same file sees the same state.
    other = open_storage("optuna.journal", tmp_path, heartbeat_interval=1)
    assert [t.state for t in other.get_all_trials(study._study_id)] == [
        TrialState.FAIL,
        TrialState.WAITING,
    ]
