"""Studies and the objective in one process, with a stand-in runner: create/resume, enqueue,
budget, divergence and pruning outcomes, multi-objective, figures."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import optuna
import pytest
from optuna.trial import TrialState

from seglab.config import NvaeParams, SearchParams
from seglab.errors import ConfigError
from seglab.search.objective import NvaeObjective, TrialDiverged, TrialResult
from seglab.search.space import SearchSpace
from seglab.search.storage import open_storage
from seglab.search.study import (
    BUDGET_TAKEN,
    OBJECTIVES_ATTR,
    best_trial,
    budget,
    objectives,
    open_study,
    pareto_front,
    progress,
    run_worker,
    study_figures,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Runs:
    """A stand-in for the trial's MLflow run: records what was opened, logged, and how it ended."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        self.records: list[dict[str, Any]] = []
        self.failed: list[int] = []

    @contextmanager
    def open(self, number: int, params: Mapping[str, Any], nvae: NvaeParams) -> Iterator[str]:
        self.opened.append(number)
        try:
            yield f"run-{number}"
        except BaseException:
            self.failed.append(number)
            raise

    def record(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))


def score(nvae: NvaeParams) -> float:
    return 1.0 - sum(abs(b - 10) for b in nvae.beta) / 100


def make(
    tmp_path: Path,
    runner: Any,
    *,
    name: str = "s",
    **search: Any,
) -> tuple[optuna.Study, NvaeObjective, Runs, SearchParams]:
    params = SearchParams.model_validate({"pruning": False, **search})
    space = SearchSpace.from_params(params, NvaeParams())
    storage = open_storage("optuna.journal", tmp_path, heartbeat_interval=60)
    study, _ = open_study(storage, name, params, space)
    runs = Runs()
    objective = NvaeObjective(
        space=space,
        base=NvaeParams(),
        runner=runner,
        objectives=objectives(params),
        total=budget(params, space),
        work=tmp_path / "work",
        open_run=runs.open,
        record=runs.record,
        pruning=params.pruning,
    )
    return study, objective, runs, params


def good_runner(
    nvae: NvaeParams, folder: Path, callbacks: Sequence[Any], run_id: str | None
) -> TrialResult:
    validity = 0.5 + nvae.stem_channels / 128
    return TrialResult(
        {"dice_mean": score(nvae), "anatomical_validity": validity},
        {"train_seconds": 1.0},
        checkpoint=folder / "best.ckpt",
    )


def test_create_enqueue_resume_and_objective_mismatch(tmp_path: Path) -> None:
    study, objective, runs, params = make(tmp_path, good_runner, n_trials=4)
    assert study.user_attrs[OBJECTIVES_ATTR] == ["dice_mean"]
    assert run_worker(study, objective, 4) == 4
    first = study.trials[0]
    assert first.params == {"beta_0": 8, "beta_1": 10, "beta_2": 11, "stem_channels": 4}
    assert first.user_attrs["mlflow_run_id"] == "run-0"
    assert first.user_attrs["checkpoint"] == str((tmp_path / "work/trial-0/best.ckpt").resolve())
    assert runs.opened == [0, 1, 2, 3] and all(r["state"] == "complete" for r in runs.records)

    # Resumed with a bigger budget: the known best is not enqueued again; 2 more trials run.
    again, objective, _, _ = make(tmp_path, good_runner, n_trials=6)
    assert run_worker(again, objective, 6) == 2
    assert len(again.trials) == 6
    assert sum(t.params == first.params for t in again.trials) == 1 or again.trials[0] == first
    with pytest.raises(ConfigError, match="optimises"):
        make(tmp_path, good_runner, multi_objective=True)


def test_grid_study_is_not_enqueued_and_its_budget_is_the_grid(tmp_path: Path) -> None:
    study, _, _, params = make(tmp_path, good_runner, sampler="grid", n_trials=100)
    assert study.trials == []  # the grid holds (8, 10, 11) already
    assert budget(params, SearchSpace.from_params(params, NvaeParams())) == 27


def test_enqueue_outside_the_space_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside the search space"):
        make(tmp_path, good_runner, space={"stem_channels": [8, 16]})


def test_diverging_trials_are_pruned_with_the_reason_and_the_study_goes_on(
    tmp_path: Path,
) -> None:
    def runner(
        nvae: NvaeParams, folder: Path, callbacks: Sequence[Any], run_id: str | None
    ) -> TrialResult:
        if nvae.beta[0] == 8:
            raise TrialDiverged("nvae: training diverged at step 3 (kl_total=inf)")
        if nvae.beta[0] == 9:
            return TrialResult({"dice_mean": math.nan, "anatomical_validity": 1.0})
        return good_runner(nvae, folder, callbacks, run_id)

    study, objective, runs, _ = make(
        tmp_path,
        runner,
        n_trials=3,
        space={"beta": {"low": 8, "high": 11}},
        enqueue={"gt": [{"beta": [8, 10, 11]}, {"beta": [9, 10, 11]}]},
    )
    assert run_worker(study, objective, 3) == 3
    kl, nan, ok = study.trials
    assert kl.state == nan.state == TrialState.PRUNED and ok.state == TrialState.COMPLETE
    assert kl.user_attrs["stopped"] == "diverged" and "step 3" in kl.user_attrs["reason"]
    assert "non-finite" in nan.user_attrs["reason"]
    assert runs.failed == [0, 1]  # their MLflow runs end FAILED; the complete one does not
    assert runs.records[0] == {
        "state": "pruned",
        "stopped": "diverged",
        "reason": "nvae: training diverged at step 3 (kl_total=inf)",
    }
    assert best_trial(study).number == 2


def test_pruning_callback_and_pruned_trials(tmp_path: Path) -> None:
    seen: list[Sequence[Any]] = []

    def runner(
        nvae: NvaeParams, folder: Path, callbacks: Sequence[Any], run_id: str | None
    ) -> TrialResult:
        seen.append(callbacks)
        raise optuna.TrialPruned("Trial was pruned at epoch 1.")

    study, objective, runs, _ = make(tmp_path, runner, n_trials=1, pruning=True)
    run_worker(study, objective, 1)
    (callback,) = seen[0]
    assert type(callback).__name__ == "LastEpochCompletes"
    assert callback.monitor == "val_dice_mean"
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["stopped"] == "pruner"
    assert runs.failed == []  # pruning is a normal end: the run finishes


def test_budget_is_never_exceeded(tmp_path: Path) -> None:
    study, objective, runs, _ = make(tmp_path, good_runner, n_trials=2)
    run_worker(study, objective, 2)
    # A worker that asked for a trial while the budget was already taken (a race in real life).
    study.optimize(objective, n_trials=1, catch=(Exception,))
    last = study.trials[-1]
    assert last.state == TrialState.FAIL and last.user_attrs["stopped"] == BUDGET_TAKEN
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2
    assert runs.opened == [0, 1]  # the surplus trial never trained nor opened a run


def test_multi_objective_front_and_figures(tmp_path: Path) -> None:
    study, objective, runs, params = make(
        tmp_path, good_runner, n_trials=8, multi_objective=True, pruning=True
    )
    run_worker(study, objective, 8)
    assert study.user_attrs[OBJECTIVES_ATTR] == ["dice_mean", "anatomical_validity"]
    front = pareto_front(study)
    assert front and all(len(t.values) == 2 for t in front)
    best = best_trial(study)
    assert best.values[0] == max(
        t.values[0] for t in study.get_trials(states=(TrialState.COMPLETE,))
    )
    assert best.number in {t.number for t in front}
    figures, skipped = study_figures(study, objectives(params))
    assert {"optimization_history", "parallel_coordinate", "pareto_front"} <= set(figures), skipped
    assert "intermediate_values" not in figures
    for figure in figures.values():
        figure.savefig(tmp_path / "f.png")
        assert (tmp_path / "f.png").stat().st_size > 1000


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_study_does_not_replay_its_random_start(tmp_path: Path, sampler: str) -> None:
    """Each resumption draws from its own seed: the start-up points are not repeated (with one
    seed, trials 4-6 were trials 1-3 again), and a fresh study stays reproducible."""
    study, objective, _, _ = make(tmp_path, good_runner, sampler=sampler, n_trials=4)
    run_worker(study, objective, 4)
    again, objective, _, _ = make(tmp_path, good_runner, sampler=sampler, n_trials=7)
    run_worker(again, objective, 7)
    drawn = [tuple(sorted(t.params.items())) for t in again.trials]
    assert len(drawn) == 7 and len(set(drawn)) == 7

    twin, objective, _, _ = make(tmp_path / "twin", good_runner, sampler=sampler, n_trials=4)
    run_worker(twin, objective, 4)
    assert [t.params for t in twin.trials] == [t.params for t in study.trials][:4]


def test_a_point_already_measured_is_not_trained_again(tmp_path: Path) -> None:
    calls: list[int] = []

    def runner(
        nvae: NvaeParams, folder: Path, callbacks: Sequence[Any], run_id: str | None
    ) -> TrialResult:
        calls.append(1)
        return good_runner(nvae, folder, callbacks, run_id)

    study, objective, runs, _ = make(tmp_path, runner, n_trials=3, enqueue={})
    point = {"beta_0": 3, "beta_1": 4, "beta_2": 5, "stem_channels": 8}
    for _ in range(2):
        study.enqueue_trial(point, skip_if_exists=False)
    run_worker(study, objective, 3)
    first, twin, fresh = study.trials
    assert first.params == twin.params == point and fresh.params != point
    assert len(calls) == 2 and runs.opened == [0, 2]  # the twin trained nothing, opened no run
    assert twin.values == first.values and twin.user_attrs["duplicate_of"] == 0
    assert twin.user_attrs["checkpoint"] == first.user_attrs["checkpoint"]


def test_every_finished_trial_prints_its_place_in_the_budget_and_the_best_so_far() -> None:
    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.7, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED))
    trials = study.get_trials()
    assert progress(study, trials[2], 8) == "trial 4 of 8 (#2): COMPLETE 0.6; best 0.7 (trial #1)"
    assert progress(study, trials[3], 8) == "trial 4 of 8 (#3): PRUNED; best 0.7 (trial #1)"
