"""Several worker processes on one study: journal file, PostgreSQL, SQLite; killed workers.

The workers are real processes (``standin_worker.py``) running the real worker loop and
objective with a cheap stand-in for the NVAE training, so these tests are about the storages,
the budget and the heartbeats, not about the NVAE.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from seglab.search.storage import open_storage
from seglab.search.study import BUDGET_TAKEN

WORKER = Path(__file__).with_name("standin_worker.py")
START_TIMEOUT_S = 240


def start_worker(
    root: Path, storage: str, study: str, total: int, seed: int, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), storage, study, str(total), "trials.log"]
        + ["--seed", str(seed), *extra],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def load(root: Path, storage: str, study: str) -> optuna.Study:
    return optuna.load_study(
        study_name=study, storage=open_storage(storage, root, heartbeat_interval=1)
    )


def started_trials(root: Path) -> collections.Counter[str]:
    """How many times each checkpoint folder (one per trial, shared with its retries) started."""
    lines = (root / "trials.log").read_text().splitlines()
    return collections.Counter(line.split()[1] for line in lines)


def check_exact_budget(study: optuna.Study, root: Path, total: int) -> None:
    """``total`` finished trials, none left running or queued, each run exactly once."""
    trials = study.get_trials()
    states = collections.Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] + states[TrialState.PRUNED] == total, states
    assert states[TrialState.RUNNING] == states[TrialState.WAITING] == 0, states
    for t in trials:  # the only failures allowed: a trial that found the budget taken
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("stopped") == BUDGET_TAKEN, t.user_attrs
    runs = started_trials(root)
    complete = {t.user_attrs["checkpoint_dir"] for t in trials if t.state == TrialState.COMPLETE}
    assert set(runs) == complete, (runs, complete)  # nothing ran that is not counted
    assert max(runs.values()) == 1, runs  # and nothing ran twice
    assert len({str(t.params) for t in trials if t.params and t.number > 0}) >= 2


def run_two_workers(root: Path, storage: str, total: int) -> None:
    # Nobody is killed here: a long grace keeps a worker starved by a busy machine from being
    # declared dead (and its trial retried) in a test about sharing the budget.
    workers = [
        start_worker(root, storage, "shared", total, seed, "--grace", "30") for seed in (0, 1)
    ]
    outputs = [finish(w) for w in workers]
    ran = [int(out.split(" ran ")[1].split()[0]) for out in outputs]
    assert all(n > 0 for n in ran), outputs  # both took part
    check_exact_budget(load(root, storage, "shared"), root, total)


def test_two_processes_share_a_journal_file(tmp_path: Path) -> None:
    run_two_workers(tmp_path, "optuna.journal", total=8)


def test_two_processes_share_postgresql(tmp_path: Path, postgres_url: str) -> None:
    run_two_workers(tmp_path, postgres_url, total=8)


def wait_for_running(root: Path, storage: str, study: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            trials = load(root, storage, study).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # the study does not exist yet
            trials = []
        if trials and (root / "trials.log").is_file():
            return
        time.sleep(0.5)
    pytest.fail("the first worker never started a trial")


@pytest.mark.parametrize("storage", ["optuna.journal", "sqlite:///optuna.db"])
def test_killed_worker_trial_is_retried_and_the_study_resumes(tmp_path: Path, storage: str) -> None:
    total = 4
    victim = start_worker(tmp_path, storage, "resumed", total, 0, "--first-sleep", "600")
    wait_for_running(tmp_path, storage, "resumed")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    stale = load(tmp_path, storage, "resumed").get_trials(states=(TrialState.RUNNING,))
    assert len(stale) == 1  # the killed trial looks alive until its heartbeat is missed

    finish(start_worker(tmp_path, storage, "resumed", total, 1))

    study = load(tmp_path, storage, "resumed")
    killed = study.trials[stale[0].number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same point, not a new one
    # The retry trains in the killed trial's checkpoint folder (resuming its last epoch).
    assert retries[0].user_attrs["checkpoint_dir"] == f"trial-{killed.number}"
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == total
    assert started_trials(tmp_path)[f"trial-{killed.number}"] == 2  # killed, then retried
