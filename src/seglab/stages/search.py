"""The NVAE search stage: an Optuna study over per-scale beta and stem width
(DVC ``search_nvae``, ``seglab search nvae``).

Each trial trains an NVAE with :func:`seglab.training.nvae_fit.train_nvae_model` on the target's
train split and scores the lowest-validation-loss epoch on the val split
(:func:`seglab.evaluation.nvae_report.evaluate_nvae`): validation Dice, and anatomical validity
as a second objective with ``multi_objective``. Targets: ``gt`` (ground-truth masks in and out,
registered as ``acdc-nvae``), ``corrector`` (ACDCSeg predictions in, ``acdc-nvae-corrector``) and
``context`` (3-gram predictions in, 12 channels, ``acdc-nvae-context``).

MLflow (experiment ``acdc-nvae-search``): the run that creates the study is its parent run
(``study-<name>``); every trial is a child run (``trial-<n>``: params, per-step and per-epoch
curves, the validation figures, ``trial.json`` with how it ended). An invocation that resumes an
existing study, or joins it from another machine, logs its report into a child run of the same
parent (``session-<name>``). The report: Optuna's figures, the summary and, for the best trial,
a child run ``best-trial-<n>`` that evaluates it on the test split (the split the training
stages register on, so ``seglab promote`` can compare it with the champion) and registers it as
a new version with the alias ``challenger``.

Outputs: ``search.best`` (the best settings as an overlay of params.yaml: ``nvae.model``),
``search.summary`` (study, counts per state, best trial, Pareto front) and ``search.plots``
(PNG figures). For the targets ``corrector`` and ``context`` the names carry the target
(``best_nvae.corrector.yaml``...). Trial checkpoints live in ``search.work/<study>/trial-<n>``
while the study runs; the best trial's folder is kept, the others are removed at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from seglab.config import CardiacParams, NvaeParams, SearchParams, TrainerParams
from seglab.data.store import SliceSet, load_splits
from seglab.errors import SeglabError
from seglab.io import atomic_dir, atomic_file, write_record
from seglab.search.objective import (
    CHECKPOINT_FILE_ATTR,
    DUPLICATE_ATTR,
    REASON_ATTR,
    RUN_ATTR,
    STOPPED_ATTR,
    NvaeObjective,
    TrialDiverged,
    TrialResult,
)
from seglab.search.space import SearchSpace
from seglab.search.storage import dashboard_command, open_storage, storage_kind
from seglab.search.study import (
    PARENT_RUN_ATTR,
    best_trial,
    budget,
    objectives,
    open_study,
    pareto_front,
    run_worker,
    spawn_workers,
    state_counts,
    study_figures,
)
from seglab.stages.common import fingerprint
from seglab.tracking import (
    configure,
    dvc_hash,
    log_dict,
    log_figure,
    log_metrics,
    tracked_run,
)
from seglab.variants import SEARCH_TARGETS, NvaeVariant

EXPERIMENT = "acdc-nvae-search"
REGISTERED_ATTR = "seglab:registered"


def with_overrides(search: SearchParams, **overrides: Any) -> SearchParams:
    """``search`` with the command line's options (those not None), validated like the file."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return SearchParams.model_validate({**search.model_dump(), **given})


def output_path(path: str, target: str) -> str:
    """``path`` for ``target``: as given for ``gt``, else with the target before the suffix."""
    if target == "gt":
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{target}{p.suffix}") if p.suffix else p / target)


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to rebuild the objective in its own process (picklable)."""

    params: CardiacParams
    search: SearchParams
    root: Path
    params_file: Path | None
    study_name: str
    data_md5: str
    parent_run_id: str | None = None
    threads: int | None = None  # torch threads per worker process (None: torch's default)

    @property
    def target(self) -> NvaeVariant:
        return SEARCH_TARGETS[self.search.target]

    @property
    def base(self) -> NvaeParams:
        """The NVAE every trial starts from: ``nvae.model`` with ``search.model``'s overrides and
        the target's input channels."""
        base = self.params.search_base()
        return base.model_copy(update={"in_channels": self.target.in_channels})

    @property
    def trainer(self) -> TrainerParams:
        return self.search.trainer or self.params.nvae.trainer

    @property
    def work(self) -> Path:
        return self.root / self.search.work / self.study_name


#: Trainer settings that change how fast a trial runs, not what it measures: workers that differ
#: only in these (a GPU worker compiling, a CPU worker with one thread) share a study.
SPEED_ONLY = {"threads", "channels_last", "compile"}


def _fingerprint(search: SearchParams, base: NvaeParams, trainer: TrainerParams, md5: str) -> str:
    """What a trial's figure depends on: a study keeps its name only while these are equal."""
    payload = {
        "target": search.target,
        "objectives": objectives(search),
        "sampler": search.sampler,
        "space": (search.grid if search.sampler == "grid" else search.space).model_dump(),
        "pruner": [search.pruning, search.pruner_startup_trials, search.pruner_warmup_epochs],
        "nvae": base.model_dump(mode="json"),
        "trainer": trainer.model_dump(mode="json", exclude=SPEED_ONLY),
        "data": md5,
    }
    return fingerprint(payload, length=8)


def make_plan(
    params: CardiacParams, search: SearchParams, root: Path, params_file: Path | None
) -> Plan:
    target = SEARCH_TARGETS[search.target]
    folder = Path(target.folder(params))
    if not (Path(root) / folder).is_dir():
        raise SeglabError(
            f"{folder}: the '{search.target}' search needs this dataset (run `dvc repro` first)"
        )
    md5 = str(dvc_hash(folder, Path(root)))
    plan = Plan(params, search, Path(root), params_file, "", md5)
    name = search.study_name or (
        f"acdc-nvae-{search.target}-{_fingerprint(search, plan.base, plan.trainer, md5)}"
    )
    return replace(plan, study_name=name)


def _load(plan: Plan, splits: Sequence[str]) -> dict[str, SliceSet]:
    folder = plan.root / plan.target.folder(plan.params)
    return load_splits(folder, splits)


def _open(plan: Plan, worker: int = 0) -> tuple[optuna.Study, bool, SearchSpace]:
    search = plan.search
    storage = open_storage(
        search.storage,
        plan.root,
        heartbeat_interval=search.heartbeat_interval,
        grace_period=search.grace_period,
        max_retry=search.max_retry,
    )
    space = SearchSpace.from_params(search, plan.base)
    study, created = open_study(storage, plan.study_name, search, space, worker=worker)
    return study, created, space


def _run_params(plan: Plan) -> dict[str, Any]:
    return {
        "profile": plan.params.profile,
        "search": plan.search,
        "nvae": plan.base,
        "trainer": plan.trainer,
    }


def _tags(plan: Plan, role: str, **more: str) -> dict[str, str]:
    return {
        "optuna.study": plan.study_name,
        "optuna.storage": storage_kind(plan.search.storage),
        "target": plan.search.target,
        "role": role,
        **more,
    }


def _run_args(plan: Plan) -> dict[str, Any]:
    return {
        "root": plan.root,
        "datasets": {plan.target.dataset: Path(plan.target.folder(plan.params))},
        "params_file": plan.params_file,
    }


def work(plan: Plan, worker: int = 0) -> int:
    """One worker: run trials of the study until its budget is finished; trials run by it."""
    import torch

    from seglab.data.acdcseg import nvae_tensors
    from seglab.evaluation.nvae_report import KEYS, evaluate_nvae
    from seglab.models.nvae import KLDivergenceError
    from seglab.tracking.registry import evaluation_tags
    from seglab.training.fit import eval_device
    from seglab.training.nvae_fit import train_nvae_model

    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    study, _, space = _open(plan, worker)
    splits = _load(plan, ("train", "val"))
    data = {name: nvae_tensors(s, plan.target.source) for name, s in splits.items()}
    val = splits["val"]
    trainer, cfg = plan.trainer, plan.params.nvae
    uri = configure(plan.params.tracking, plan.root)

    def runner(
        nvae: NvaeParams, folder: Path, callbacks: Sequence[Any], run_id: str | None
    ) -> TrialResult:
        try:
            fitted = train_nvae_model(
                nvae,
                trainer,
                data,
                folder,
                run_id=run_id,
                tracking_uri=uri if run_id else None,
                callbacks=callbacks,
                log_every_n_steps=cfg.log_every_n_steps,
            )
        except KLDivergenceError as exc:
            log_dict({"error": str(exc), "step": exc.step, "terms": exc.terms}, "divergence.json")
            raise TrialDiverged(str(exc)) from exc
        figures = evaluate_nvae(
            fitted.module,
            *data["val"],
            val.spacing,
            batch_size=trainer.eval_batch_size,
            device=eval_device(trainer),
        )
        metrics = {k: float(figures[k]) for k in KEYS if k in figures}
        timings = {**fitted.timings(), "epochs": float(fitted.epochs)}
        log_metrics({**metrics, **timings})
        return TrialResult(metrics, timings, checkpoint=fitted.kept_path)

    @contextmanager
    def open_run(
        number: int, trial_params: Mapping[str, Any], nvae: NvaeParams
    ) -> Iterator[str | None]:
        with tracked_run(
            plan.params.tracking,
            EXPERIMENT,
            f"trial-{number}",
            params={"trial": dict(trial_params), "nvae": nvae, "trainer": trainer},
            tags={
                **_tags(plan, "trial", **{"optuna.trial": str(number)}),
                **evaluation_tags("val", plan.data_md5),
            },
            nested=True,
            parent_run_id=plan.parent_run_id,
            **_run_args(plan),
        ) as run:
            yield run.info.run_id

    objective = NvaeObjective(
        space=space,
        base=plan.base,
        runner=runner,
        objectives=objectives(plan.search),
        total=budget(plan.search, space),
        work=plan.work,
        open_run=open_run,
        record=lambda record: log_dict(dict(record), "trial.json"),
        pruning=plan.search.pruning,
    )
    poll = float(max(1, min(5, plan.search.heartbeat_interval)))
    return run_worker(study, objective, budget(plan.search, space), poll_seconds=poll)


def _work_in_process(plan: Plan, worker: int) -> None:
    """Entry point of a spawned worker process."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work(plan, worker)


def _run_workers(plan: Plan) -> None:
    workers = plan.search.workers
    if workers == 1:
        work(plan)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    spawned = replace(plan, threads=threads)
    spawn_workers(_work_in_process, [(spawned, i) for i in range(workers)])


def search_nvae(
    params: CardiacParams,
    *,
    root: Path = Path("."),
    params_file: Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Create or resume the study, run ``search.workers`` workers until ``search.n_trials``
    trials are finished, then write the report and register the best trial's model.

    ``overrides`` are the command line's: ``target``, ``storage``, ``study_name``, ``n_trials``,
    ``sampler``, ``multi_objective``, ``workers`` (None keeps the params' value). Returns the
    summary written to ``search.summary``.
    """
    root = Path(root)
    search = with_overrides(params.search, **overrides)
    plan = make_plan(params, search, root, params_file)
    _load(plan, ("train", "val", "test"))  # refuse unusable data before a study or run exists
    study, created, _ = _open(plan)
    if created:
        shutil.rmtree(plan.work, ignore_errors=True)  # left by an earlier study of this name
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent is None:
        with tracked_run(
            params.tracking,
            EXPERIMENT,
            f"study-{plan.study_name}",
            params=_run_params(plan),
            tags=_tags(plan, "study"),
            **_run_args(plan),
        ) as run:
            study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
            plan = replace(plan, parent_run_id=run.info.run_id)
            _run_workers(plan)
            return report(plan, study)
    plan = replace(plan, parent_run_id=parent)
    _run_workers(plan)
    with tracked_run(
        params.tracking,
        EXPERIMENT,
        f"session-{plan.study_name}",
        params=_run_params(plan),
        tags=_tags(plan, "session"),
        parent_run_id=parent,
        **_run_args(plan),
    ):
        return report(plan, study)


def report(plan: Plan, study: optuna.Study) -> dict[str, Any]:
    """Inside the invocation's run: best settings file, figures, summary, registration."""
    import matplotlib.pyplot as plt

    search, names = plan.search, objectives(plan.search)
    space = SearchSpace.from_params(search, plan.base)
    best = best_trial(study)
    target = search.target
    _write_best(plan.root / output_path(search.best, target), plan, study, space, best)

    figures, skipped = study_figures(study, names, seed=search.seed)
    with atomic_dir(plan.root / output_path(search.plots, target)) as folder:
        for name, figure in figures.items():
            figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            log_figure(figure, f"plots/{name}.png")
            plt.close(figure)

    registered = _register_best(plan, study, space, best) if search.register_best else None
    summary = _summary(plan, study, space, best, registered, skipped)
    write_record(plan.root / output_path(search.summary, target), summary)
    log_dict(summary, "search/summary.json")
    if best is not None:
        log_metrics(
            {f"best_{k}": v for k, v in zip(names, best.values, strict=True)}
            | {"trials_finished": float(summary["finished"])}
        )
    _clean(plan, best)
    return summary


def _overlay(space: SearchSpace, best: optuna.trial.FrozenTrial | None) -> dict[str, Any]:
    return space.overlay(best.params) if best is not None else {}


def _write_best(
    path: Path,
    plan: Plan,
    study: optuna.Study,
    space: SearchSpace,
    best: optuna.trial.FrozenTrial | None,
) -> None:
    """The best trial's NVAE settings as an overlay of params.yaml (``nvae.model`` keys)."""
    if best is None:
        found = "no trial completed: the overlay is empty (nvae.model stays as it is)"
    else:
        values = ", ".join(
            f"val {k} {v:.4f}" for k, v in zip(objectives(plan.search), best.values, strict=True)
        )
        found = f"trial {best.number}: {values}"
    header = (
        f"# The best NVAE settings of study {plan.study_name} (seglab search nvae, target "
        f"{plan.search.target}),\n# {found}.\n"
        "# An overlay of params.yaml: a stage that takes this file applies nvae.model on top.\n"
    )
    body = yaml.safe_dump({"nvae": {"model": _overlay(space, best)}}, sort_keys=False)
    with atomic_file(path) as tmp:
        tmp.write_text(header + body)


def _summary(
    plan: Plan,
    study: optuna.Study,
    space: SearchSpace,
    best: optuna.trial.FrozenTrial | None,
    registered: dict[str, Any] | None,
    skipped: Mapping[str, str],
) -> dict[str, Any]:
    names = objectives(plan.search)
    counts = state_counts(study)

    def entry(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {
            "number": t.number,
            **dict(zip(names, t.values, strict=True)),
            "settings": space.overlay(t.params),
            "mlflow_run_id": t.user_attrs.get(RUN_ATTR),
        }

    stopped = [
        {
            "number": t.number,
            STOPPED_ATTR: t.user_attrs.get(STOPPED_ATTR),
            REASON_ATTR: t.user_attrs.get(REASON_ATTR),
        }
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    ]
    return {
        "study": plan.study_name,
        "storage": storage_kind(plan.search.storage),
        "dashboard": dashboard_command(plan.search.storage),
        "target": plan.search.target,
        "sampler": plan.search.sampler,
        "objectives": list(names),
        "budget": budget(plan.search, space),
        "finished": counts.get("COMPLETE", 0) + counts.get("PRUNED", 0),
        "states": counts,
        "best": entry(best) if best is not None else None,
        "pareto_front": [entry(t) for t in pareto_front(study)] if len(names) > 1 else None,
        "pruned": stopped,
        "duplicates": {
            str(t.number): t.user_attrs[DUPLICATE_ATTR]
            for t in study.get_trials(deepcopy=False)
            if DUPLICATE_ATTR in t.user_attrs
        },
        "registered": registered,
        "figures_skipped": dict(skipped),
        "mlflow_parent_run_id": plan.parent_run_id,
    }


def _register_best(
    plan: Plan, study: optuna.Study, space: SearchSpace, best: optuna.trial.FrozenTrial | None
) -> dict[str, Any] | None:
    """Evaluate the best trial's model on the test split in a child run and register it as a new
    version with the alias ``challenger`` (once per best trial, whichever worker gets here)."""
    if best is None:
        return None
    done = study.user_attrs.get(REGISTERED_ATTR)
    if done is not None and done.get("trial") == best.number:
        return dict(done)
    checkpoint = Path(best.user_attrs.get(CHECKPOINT_FILE_ATTR, ""))
    if not checkpoint.is_file():
        return {
            "trial": best.number,
            "skipped": f"its checkpoint ({checkpoint}) is not on this machine: the machine that "
            "trained it registers it when its worker finishes",
        }
    from seglab.data.acdcseg import nvae_tensors
    from seglab.evaluation.nvae_report import KEYS, evaluate_as_configured
    from seglab.inference.nvae import NvaeReconstructor, load_nvae
    from seglab.models.segmenters import parameter_count, weights_mb
    from seglab.tracking.models import log_and_register
    from seglab.tracking.registry import CHALLENGER, evaluation_tags, set_alias
    from seglab.training.fit import apply_speedups

    module = load_nvae(checkpoint)
    apply_speedups(module, plan.trainer.channels_last, compile=False)
    test = _load(plan, ("test",))["test"]
    inputs, targets = nvae_tensors(test, plan.target.source)
    cfg = plan.params.nvae
    nvae = module.params
    with tracked_run(
        plan.params.tracking,
        EXPERIMENT,
        f"best-trial-{best.number}",
        params={"trial": best.params, "nvae": nvae, "trainer": plan.trainer},
        tags={
            **_tags(plan, "best", **{"optuna.trial": str(best.number)}),
            "optuna.trial_run_id": str(best.user_attrs.get(RUN_ATTR)),
        },
        nested=True,
        **_run_args(plan),
    ):
        figures = evaluate_as_configured(module, inputs, targets, test.spacing, cfg, plan.trainer)
        net = module.model
        sizes = {"params_count": parameter_count(net), "model_mb": weights_mb(net)}
        log_metrics({**{k: figures[k] for k in KEYS if k in figures}, **sizes})
        version = log_and_register(
            NvaeReconstructor(net),
            plan.target.registered,
            inputs[:2].numpy(),
            tags={
                **evaluation_tags("test", plan.data_md5),
                "source": plan.target.source,
                "stem_channels": str(nvae.stem_channels),
                "beta": ",".join(f"{b:g}" for b in nvae.beta),
                "optuna.study": plan.study_name,
                "optuna.trial": str(best.number),
            },
        )
        set_alias(
            plan.params.tracking,
            plan.root,
            plan.target.registered,
            CHALLENGER,
            str(version.version),
            reason=f"best trial {best.number} of Optuna study {plan.study_name}",
        )
    done = {
        "trial": best.number,
        "model": plan.target.registered,
        "version": str(version.version),
        "alias": CHALLENGER,
        "test": {k: figures[k] for k in KEYS if k in figures},
    }
    study.set_user_attr(REGISTERED_ATTR, done)
    return done


def _clean(plan: Plan, best: optuna.trial.FrozenTrial | None) -> None:
    """Remove this machine's trial folders, except the best trial's kept checkpoint (it may be
    registered again after the study grows; ``best.ckpt``, or ``last.ckpt`` with ``keep:
    last``); a finished trial is never resumed, so its other checkpoint goes too (3.6 GB for a
    stem-64 NVAE's ``last.ckpt``)."""
    if not plan.work.is_dir():
        return
    kept = Path(best.user_attrs.get(CHECKPOINT_FILE_ATTR, "")) if best is not None else None
    for folder in plan.work.glob("trial-*"):
        if kept is None or folder.resolve() != kept.parent.resolve():
            shutil.rmtree(folder, ignore_errors=True)
            continue
        for name in ("best.ckpt", "last.ckpt"):
            if (folder / name).resolve() != kept.resolve():
                (folder / name).unlink(missing_ok=True)
