"""The objective of an NVAE search: one trial = one NVAE trained and evaluated, one MLflow run.

:class:`NvaeObjective` draws the trial's settings (:mod:`seglab.search.space`), opens the
trial's MLflow run, lets a *runner* train and evaluate the NVAE (the stage supplies it, so this
layer stays free of data loading), and returns the validation Dice (and, for a multi-objective
study, the anatomical validity).

How a trial ends:

* **complete**: the figures are finite; they are the trial's values and user attributes.
* **pruned by the pruner**: the median pruner stopped it on its per-epoch ``val_dice_mean``
  (Optuna's Lightning callback, never at the trial's last epoch: see
  :mod:`seglab.search.pruning`); its MLflow run ends FINISHED with ``trial.json`` saying so.
* **diverged**: the loss became NaN/infinite (the runner raises :class:`TrialDiverged` for the
  model's :class:`~seglab.models.nvae.KLDivergenceError`, the study's KL blow-up) or the figures
  are not finite. The trial is *pruned*, not failed, so the sampler learns to avoid the
  region, with user attributes ``stopped = diverged`` and ``reason`` (the one-line error naming
  the step and KL terms); its MLflow run ends FAILED with ``trial.json`` holding the reason. The
  study carries on.
* **budget taken**: see :func:`~seglab.search.study.within_budget`; failed before training.
* **already measured**: TPE can draw a point a complete trial already has (integer betas make it
  likely); the trial takes that trial's figures without training (user attribute
  ``duplicate_of``), since training is seeded and would only repeat them.
* anything else (a bug, a missing file) fails the trial and stops the worker with the error.

A retried trial (its first worker died) trains in the first attempt's checkpoint folder, so it
resumes from the last epoch that worker saved.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback

from seglab.config import NvaeParams
from seglab.search.space import SearchSpace
from seglab.search.study import BUDGET_TAKEN, BudgetTaken, stored_trial, within_budget

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

#: The per-epoch figure the pruner watches (logged by ``NvaeModule`` on every validation).
PRUNE_MONITOR = "val_dice_mean"
RUN_ATTR = "mlflow_run_id"
STOPPED_ATTR = "stopped"
REASON_ATTR = "reason"
DUPLICATE_ATTR = "duplicate_of"
CHECKPOINT_ATTR = "checkpoint_dir"  # the trial's folder (a retry shares its first attempt's)
CHECKPOINT_FILE_ATTR = "checkpoint"  # the best epoch's file, as a path on the worker's machine


@dataclass(frozen=True)
class TrialResult:
    """What a runner measured: ``metrics`` holds at least the objectives' keys (``dice_mean``,
    ``anatomical_validity``) on the validation split; ``extra`` (timings) is kept too. All of
    them become the trial's user attributes."""

    metrics: Mapping[str, float]
    extra: Mapping[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None  # the model to register should this trial be the best


#: Train and evaluate one NVAE: (settings, checkpoint folder, extra Lightning callbacks, the
#: trial's MLflow run id or None) -> figures. Raises TrialDiverged when training diverges.
TrialRunner = Callable[[NvaeParams, Path, Sequence["Callback"], str | None], TrialResult]
#: Open the trial's MLflow run: (trial number, trial params, NVAE settings) -> run id.
RunOpener = Callable[[int, Mapping[str, Any], NvaeParams], AbstractContextManager[str | None]]
#: Write a small JSON record into the open trial run.
RunRecorder = Callable[[Mapping[str, Any]], None]


class TrialDiverged(Exception):
    """Raised by a runner whose training diverged (it wraps the model's
    :class:`~seglab.models.nvae.KLDivergenceError`, keeping this layer free of torch)."""


class Diverged(Exception):
    """Ends the trial's MLflow run as FAILED; the objective turns it into a pruned trial."""


@dataclass
class NvaeObjective:
    """Callable for ``study.optimize``; see the module docstring for how trials end."""

    space: SearchSpace
    base: NvaeParams
    runner: TrialRunner
    objectives: tuple[str, ...]
    total: int  # the study's budget of finished trials
    work: Path  # per-trial checkpoint folders live here
    open_run: RunOpener
    record: RunRecorder
    pruning: bool = True

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        if not within_budget(trial, self.total):
            reason = f"{BUDGET_TAKEN}: {self.total} trials are finished, running or queued"
            trial.set_user_attr(STOPPED_ATTR, BUDGET_TAKEN)
            trial.set_user_attr(REASON_ATTR, reason)
            raise BudgetTaken(reason)
        params = self.space.suggest(trial)
        twin = _measured(trial)
        if twin is not None:
            for key, value in twin.user_attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr(DUPLICATE_ATTR, twin.number)
            return twin.values[0] if len(twin.values) == 1 else tuple(twin.values)
        nvae = self.space.apply(self.base, params)
        frozen = stored_trial(trial)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            first = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        folder = self.work / f"trial-{trial.number if first is None else first}"
        trial.set_user_attr(CHECKPOINT_ATTR, folder.name)
        callbacks: list[Callback] = []
        if self.pruning and len(self.objectives) == 1:
            from seglab.search.pruning import LastEpochCompletes  # imports Lightning

            callbacks.append(LastEpochCompletes(trial, monitor=PRUNE_MONITOR))
        stopped: tuple[str, str] | None = None  # (diverged | pruner, reason)
        try:
            with self.open_run(trial.number, params, nvae) as run_id:
                if run_id is not None:
                    trial.set_user_attr(RUN_ATTR, run_id)
                try:
                    result = self.runner(nvae, folder, callbacks, run_id)
                except TrialDiverged as exc:
                    stopped = ("diverged", str(exc))
                except optuna.TrialPruned as exc:
                    stopped = ("pruner", str(exc) or "pruned")
                else:
                    values = [float(result.metrics[k]) for k in self.objectives]
                    if not all(math.isfinite(v) for v in values):
                        figures = dict(zip(self.objectives, values, strict=True))
                        stopped = ("diverged", f"non-finite figures {figures}")
                if stopped is None:
                    self.record({"state": "complete", "params": params, **result.metrics})
                else:
                    self.record(
                        {"state": "pruned", STOPPED_ATTR: stopped[0], REASON_ATTR: stopped[1]}
                    )
                    if stopped[0] == "diverged":
                        raise Diverged(stopped[1])
        except Diverged:
            pass
        if stopped is not None:
            trial.set_user_attr(STOPPED_ATTR, stopped[0])
            trial.set_user_attr(REASON_ATTR, stopped[1])
            raise optuna.TrialPruned(stopped[1])
        if result.checkpoint is not None:
            trial.set_user_attr(CHECKPOINT_FILE_ATTR, str(Path(result.checkpoint).resolve()))
        for key, value in {**result.metrics, **result.extra}.items():
            if isinstance(value, int | float):
                trial.set_user_attr(key, float(value))
        return values[0] if len(values) == 1 else tuple(values)


def _measured(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """A complete trial of the same study with exactly this trial's parameters, if any."""
    done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return next((t for t in done if t.params == trial.params), None)
