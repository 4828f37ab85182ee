"""Create or resume a study, run workers against it until its budget is spent, report on it.

* **Create or resume.** :func:`open_study` creates the study, or loads it when the name exists
  (a resumed, or a shared, study); it refuses a study whose objectives differ. The process that
  creates a study enqueues the known good settings (TPE/random) as its first trials.
* **Budget.** ``n_trials`` is the study's total of finished (complete or pruned) trials, however
  many workers on however many machines share it (:func:`run_worker`): a worker starts a trial
  only while the budget is not taken by finished, running and queued trials, waits while the
  rest of it runs elsewhere (a trial may still die and come back for a retry), and stops when
  the budget is finished. Two workers that start at the same instant may both see one free
  place; the later trial (by number) then stops before training, as a FAIL with the user
  attribute ``stopped: budget taken`` (:class:`BudgetTaken`), so the budget is never exceeded.
* **Samplers.** TPE (default; seeded per worker, with the constant liar so parallel workers do
  not pile onto one point), random, or the grid; a median pruner on the per-epoch validation
  Dice for single-objective studies.
* **Report.** :func:`best_trial`, :func:`pareto_front`, :func:`state_counts` and
  :func:`study_figures` (Optuna's matplotlib figures).
"""

from __future__ import annotations

import multiprocessing
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from seglab.config import SearchParams
from seglab.errors import ConfigError, SeglabError
from seglab.search.space import SearchSpace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What each objective is, in the order of a trial's values (all maximised).
SINGLE_OBJECTIVE = ("dice_mean",)
MULTI_OBJECTIVE = ("dice_mean", "anatomical_validity")
#: Study user attributes.
TARGET_ATTR = "seglab:target"
OBJECTIVES_ATTR = "seglab:objectives"
PARENT_RUN_ATTR = "seglab:mlflow_parent_run_id"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BUDGET_TAKEN = "budget taken"


class BudgetTaken(Exception):
    """Raised by an objective whose trial would exceed the study's budget (see module doc)."""


def objectives(search: SearchParams) -> tuple[str, ...]:
    return MULTI_OBJECTIVE if search.multi_objective else SINGLE_OBJECTIVE


def budget(search: SearchParams, space: SearchSpace) -> int:
    """The study's total of finished trials: ``n_trials``, at most the grid's size."""
    if space.use_grid:
        return min(search.n_trials, space.grid_size())
    return search.n_trials


#: Seed distance between resumptions of a study (far beyond any number of workers).
RESUME_STRIDE = 1_000_003


def make_sampler(
    search: SearchParams, space: SearchSpace, worker: int = 0, existing: int = 0
) -> BaseSampler:
    """The sampler of worker ``worker`` joining a study of ``existing`` trials: seeded with
    ``seed + worker`` (+ a stride per existing trial), so that parallel workers draw different
    points and a resumed study does not replay the random start-up points it already has (the
    same seed would repeat the same trials). A fresh study's draws stay reproducible."""
    seed = search.seed + worker + RESUME_STRIDE * existing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if search.sampler == "grid":
            return GridSampler(space.grid_space(), seed=seed)
        if search.sampler == "random":
            return RandomSampler(seed=seed)
        return TPESampler(seed=seed, constant_liar=True)


def make_pruner(search: SearchParams) -> optuna.pruners.BasePruner:
    """Median pruning on the per-epoch validation Dice; none for a multi-objective study
    (Optuna's pruners compare one value per step)."""
    if not search.pruning or search.multi_objective:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=search.pruner_startup_trials,
        n_warmup_steps=search.pruner_warmup_epochs,
    )


def open_study(
    storage: BaseStorage,
    name: str,
    search: SearchParams,
    space: SearchSpace,
    *,
    worker: int = 0,
) -> tuple[optuna.Study, bool]:
    """The study ``name`` (created, or loaded when it exists) and whether this call created it."""
    sampler, pruner = make_sampler(search, space, worker), make_pruner(search)
    wanted = objectives(search)
    directions = ["maximize"] * len(wanted)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            directions=directions,
            sampler=sampler,
            pruner=pruner,
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        existing = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
        sampler = make_sampler(search, space, worker, existing)
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        created = False
    recorded = study.user_attrs.get(OBJECTIVES_ATTR)
    if recorded is not None and tuple(recorded) != wanted:
        raise ConfigError(
            f"study '{name}' optimises {list(recorded)}, not {list(wanted)}: "
            "use another --study-name (or the matching --multi-objective setting)"
        )
    if created:
        study.set_user_attr(OBJECTIVES_ATTR, list(wanted))
        study.set_user_attr(TARGET_ATTR, search.target)
        if not space.use_grid:  # the grid holds the known points already; enqueued, they'd repeat
            for entry in search.enqueue.get(search.target, ()):
                study.enqueue_trial(_checked(space, entry), skip_if_exists=True)
    return study, created


def _checked(space: SearchSpace, entry: dict[str, Any]) -> dict[str, Any]:
    """An enqueue entry's trial parameters, refused when they lie outside the search space."""
    params = space.trial_params(entry)
    r = space.space.beta
    for key, value in params.items():
        if key.startswith("beta_"):
            ok = r.low <= value <= r.high
        else:
            ok = value in getattr(space.space, key)
        if not ok:
            raise ConfigError(f"search.enqueue: {entry} is outside the search space ({key})")
    return params


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Number of trials per state, by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ...)."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def stored_trial(trial: optuna.Trial, trials: Sequence[FrozenTrial] | None = None) -> FrozenTrial:
    """The stored record of a running ``trial`` (its system attributes: enqueued parameters,
    the trial it retries), through the public API: the study's trial of the same number."""
    for frozen in trials if trials is not None else trial.study.get_trials(deepcopy=False):
        if frozen.number == trial.number:
            return frozen
    raise SeglabError(f"trial {trial.number} is not in study {trial.study.study_name}")


def within_budget(trial: optuna.Trial, total: int) -> bool:
    """Whether ``trial`` may run: an enqueued or retried trial always (it holds a place already);
    a new one when fewer than ``total`` earlier trials are finished, running or queued."""
    trials = trial.study.get_trials(deepcopy=False)
    frozen = stored_trial(trial, trials)
    if "fixed_params" in frozen.system_attrs or "failed_trial" in frozen.system_attrs:
        return True
    earlier = [t for t in trials if t.number < trial.number and t.state != TrialState.FAIL]
    return len(earlier) < total


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float | Sequence[float]],
    total: int,
    *,
    poll_seconds: float = 5.0,
) -> int:
    """Run trials of ``study`` until ``total`` are finished; return how many this worker ran.

    Before each trial, stale trials (dead workers) are failed and re-queued by the storage's
    heartbeat callback; while the rest of the budget runs in other workers, this one waits.
    """
    ran = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        if done >= total:
            return ran
        queued = sum(t.state == TrialState.WAITING for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if queued or done + running < total:
            study.optimize(
                objective,
                n_trials=1,
                catch=(BudgetTaken,),
                gc_after_trial=True,
                callbacks=[lambda s, t: print(progress(s, t, total), file=sys.stderr, flush=True)],
            )
            ran += 1
        else:
            time.sleep(poll_seconds)


def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial, total: int) -> str:
    """One line per finished trial: which of the budget, its outcome, the best so far.

    >>> study = optuna.create_study(direction="maximize")
    >>> study.add_trial(optuna.trial.create_trial(value=0.5))
    >>> progress(study, study.trials[0], 8)
    'trial 1 of 8 (#0): COMPLETE 0.5; best 0.5 (trial #0)'
    """
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    outcome = trial.state.name + (
        " " + ", ".join(f"{v:.4g}" for v in trial.values) if trial.values else ""
    )
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = ""
    if complete and len(study.directions) == 1:
        top = study.best_trial
        best = f"; best {top.value:.4g} (trial #{top.number})"
    elif complete:
        best = f"; Pareto front of {len(study.best_trials)}"
    return f"trial {done} of {total} (#{trial.number}): {outcome}{best}"


def spawn_workers(target: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> None:
    """Run ``target(*a)`` for each ``a`` in its own process (spawned: no forked torch or MLflow
    state) and wait for all; a worker that fails is reported after the others finished."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=a, daemon=False) for a in args]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
    if failed:
        codes = ", ".join(f"worker {i}: exit code {processes[i].exitcode}" for i in failed)
        raise SeglabError(f"search: {len(failed)} of {len(processes)} workers failed ({codes})")


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The non-dominated complete trials (for one objective: the best trial), by number."""
    try:
        return sorted(study.best_trials, key=lambda t: t.number)
    except ValueError:
        return []


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the highest Dice (the first objective); with several objectives,
    the Pareto front's Dice end (ties go to the next objective). None while none is complete."""
    if len(study.directions) > 1:
        candidates = pareto_front(study)
    else:
        candidates = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not candidates:
        return None
    return max(candidates, key=lambda t: (*t.values, -t.number))


def study_figures(
    study: optuna.Study, names: Sequence[str], seed: int = 0
) -> tuple[dict[str, Figure], dict[str, str]]:
    """Optuna's standard figures of ``study`` (matplotlib), and why any could not be drawn.

    Optimisation history, parameter importances (fANOVA, seeded), parallel coordinates, the
    per-epoch validation Dice of every trial (single objective) and the Pareto front (several).
    For several objectives the history, importances and coordinates show the first (Dice).
    """
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as ovm

    multi = len(names) > 1
    target: dict[str, Any] = {}
    if multi:
        target = {"target": lambda t: t.values[0], "target_name": names[0]}
    else:
        target = {"target_name": names[0]}
    makers: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: ovm.plot_optimization_history(study, **target),
        "param_importances": lambda: ovm.plot_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=seed), **target
        ),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study, **target),
    }
    if multi:
        makers["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=list(names))
    elif any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        makers["intermediate_values"] = lambda: ovm.plot_intermediate_values(study)
    figures: dict[str, Figure] = {}
    skipped: dict[str, str] = {}
    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "experimental", "no complete trials", ...
                axes = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            skipped[name] = str(exc) or type(exc).__name__
            continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = first.figure
        if not figure.axes or not any(ax.has_data() for ax in figure.axes):
            skipped[name] = "nothing to plot yet"
            plt.close(figure)
            continue
        figure.set_size_inches(8, 5)
        figures[name] = figure
    return figures, skipped
