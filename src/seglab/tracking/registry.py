"""The model registry: champion/challenger promotion with a recorded history, loading by alias.

Every registered model (``acdc-segmenter-<arch>``, ``acdc-nvae``, ``acdc-nvae-corrector``,
``acdc-nvae-context``, ``lgg-<arch>-<encoder>``) has at most one ``champion`` (the version the
project ships and every stage loads as ``models:/NAME@champion``) and optionally a
``challenger`` (the version proposed to replace it). :func:`promote` moves ``champion`` only
when the candidate is fit to be one at all (at or above the absolute floor of its metric, its
predictions not empty: ``promotion`` params, :class:`~seglab.config.PromotionParams`) and better
than the champion on the model's metric and no worse in anatomical validity.

Conventions (defined here, and only here, so that the training stages can follow them):

* **What a version was evaluated on.** Model-version tag ``eval.split`` (``test``, ``val``) and
  ``eval.dataset_md5`` (the DVC md5 of the dataset the metrics were computed on); build them with
  :func:`evaluation_tags`. When the version lacks them, the same tags on its run are used, and for
  the dataset, failing those, the run's lineage tags ``data.<name>.dvc_md5`` (all of them). Two
  versions are compared only when both agree on the split and the dataset.
* **The figures.** The metrics of the version's run (last logged value), under the architecture's
  keys: ``dice_mean`` by default for ``acdc-*`` models, ``iou`` for ``lgg-*`` models;
  ``anatomical_validity`` guards the promotion when the champion has it; ``emptied_fraction``
  (the share of slices with a heart on which the masks are all background) refuses a candidate
  whose predictions are empty, when its run records it.
* **The history.** Each decision is a JSON :class:`Decision` in the candidate version's tag
  ``promotion.<UTC stamp>``; a replaced champion gets ``demotion.<UTC stamp>`` naming its
  successor. :func:`promotion_history` reads them back in time order.
* **Other alias moves.** :func:`set_alias` points any alias but ``champion`` at a version (a
  search's best becomes ``challenger``) and records it in the version's tag ``alias.<UTC stamp>``
  (alias, previous version, reason, time, git commit).

MLflow has no transaction across alias moves, so a promotion re-reads the aliases under an
exclusive file lock (one per tracking store, on this machine) and checks again right before
moving ``champion``: two promotions started at once are serialised, and the second one compares
against the champion the first one left. :func:`set_alias` takes the same lock, so a new
challenger never lands between a promotion's reading of the aliases and its clearing of the
challenger it promoted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from seglab.config import PromotionParams, TrackingParams
from seglab.errors import ConfigError, SeglabError
from seglab.tracking.lineage import git_commit
from seglab.tracking.runs import configure, log_dict, tracked_run

if TYPE_CHECKING:
    import torch

CHAMPION = "champion"
CHALLENGER = "challenger"
EVAL_SPLIT_TAG = "eval.split"
EVAL_DATASET_TAG = "eval.dataset_md5"
PROMOTION_TAG = "promotion."
DEMOTION_TAG = "demotion."
ALIAS_TAG = "alias."
VALIDITY = "anatomical_validity"
EMPTIED = "emptied_fraction"  # seglab.metrics.emptied.EMPTIED_FRACTION
# Promotions are runs too (lineage of the decision itself); under `mlflow run -e promote` the
# launcher's run is adopted, so the entry point leaves exactly one run.
PROMOTION_EXPERIMENT = "model-promotions"
LOCK_TIMEOUT_S = 120.0
# A writer that bypasses the lock (the UI, another machine) makes the re-check fail; retry then.
ATTEMPTS = 3

Goal = Literal["max", "min"]
Outcome = Literal["promoted", "rejected", "unchanged"]

MAXIMISE = frozenset({"dice_mean", "dice_lv", "dice_myo", "dice_rv", VALIDITY, "iou", "accuracy"})
MINIMISE = frozenset({"hd95_mean", "train_seconds", "params_count", "model_mb"})
DEFAULT_METRICS = (("acdc-", "dice_mean"), ("lgg-", "iou"))
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def evaluation_tags(split: str, dataset_md5: str) -> dict[str, str]:
    """The tags a training stage puts on a model version (or its run) so it can be promoted:
    the split its metrics were computed on and the DVC md5 of that dataset."""
    return {EVAL_SPLIT_TAG: split, EVAL_DATASET_TAG: dataset_md5}


def default_metric(model: str) -> str:
    """The metric a model family is promoted on (the architecture's comparable key)."""
    for prefix, metric in DEFAULT_METRICS:
        if model.startswith(prefix):
            return metric
    raise ConfigError(f"no default promotion metric for model '{model}': pass --metric")


def metric_goal(metric: str) -> Goal:
    """Whether a larger value of ``metric`` is better (``max``) or a smaller one (``min``)."""
    if metric in MAXIMISE:
        return "max"
    if metric in MINIMISE:
        return "min"
    raise ConfigError(f"unknown direction for metric '{metric}': pass --goal max or --goal min")


@dataclass(frozen=True)
class Evaluated:
    """One model version as a promotion sees it: its figures and what they were computed on."""

    version: str
    run_id: str
    value: float
    validity: float | None
    split: str | None
    dataset: str | None
    commit: str | None  # the git commit of the run that trained it
    emptied: float | None = None  # emptied_fraction: masks all background where a heart is
    floored: dict[str, float] = field(default_factory=dict)  # values of the metrics with a floor


@dataclass(frozen=True)
class Decision:
    """One promotion decision, as recorded in the candidate's ``promotion.<stamp>`` tag."""

    model: str
    outcome: Outcome
    reason: str
    metric: str
    goal: Goal
    min_delta: float
    candidate: Evaluated
    champion: Evaluated | None  # the champion before the decision
    time: str  # ISO 8601, UTC
    git_commit: str  # the checkout that made the decision
    promotion_run: str | None = None
    dry_run: bool = False
    repeat_of: str | None = None  # time of an identical earlier rejection (not recorded again)
    floors: dict[str, float] = field(default_factory=dict)  # the floors checked
    max_emptied: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Decision:
        raw = json.loads(text)
        raw["candidate"] = Evaluated(**raw["candidate"])
        raw["champion"] = Evaluated(**raw["champion"]) if raw.get("champion") else None
        return cls(**raw)


@dataclass(frozen=True)
class History:
    """A model's current aliases and every recorded decision, oldest first."""

    model: str
    aliases: dict[str, str]
    decisions: list[Decision]


def _client(tracking: TrackingParams, root: Path) -> tuple[MlflowClient, str]:
    uri = configure(tracking, root)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _aliases(client: MlflowClient, model: str) -> dict[str, str]:
    try:
        return {a: str(v) for a, v in client.get_registered_model(model).aliases.items()}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise SeglabError(f"registered model '{model}' not found") from exc
        raise


def _versions(client: MlflowClient, model: str) -> list[ModelVersion]:
    name = model.replace("'", "\\'")
    return list(client.search_model_versions(f"name = '{name}'"))


def _version(client: MlflowClient, model: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(model, version)
    except MlflowException as exc:
        raise SeglabError(f"registered model '{model}' has no version {version}") from exc


def _candidate(
    client: MlflowClient, model: str, aliases: dict[str, str], version: str | None
) -> str:
    """The explicit version, else the ``challenger``, else the newest version."""
    if version is not None:
        return str(_version(client, model, version).version)
    if CHALLENGER in aliases:
        return aliases[CHALLENGER]
    versions = _versions(client, model)
    if not versions:
        raise SeglabError(f"registered model '{model}' has no versions")
    return str(max(int(v.version) for v in versions))


def _data_hashes(tags: dict[str, str]) -> str | None:
    """The run's input datasets as ``name=md5`` pairs: the fallback dataset identity."""
    pairs = sorted(
        (key[len("data.") : -len(".dvc_md5")], value)
        for key, value in tags.items()
        if key.startswith("data.") and key.endswith(".dvc_md5")
    )
    return ",".join(f"{name}={md5}" for name, md5 in pairs) or None


def floored_metrics(model: str, metric: str, floors: Mapping[str, float]) -> tuple[str, ...]:
    """The metrics whose floor a candidate must meet: the one promoted on, and the model
    family's own (:func:`default_metric`), so that ranking on size or speed never crowns a
    model that segments nothing; only those with a floor."""
    names = [metric]
    family = next((m for prefix, m in DEFAULT_METRICS if model.startswith(prefix)), None)
    if family is not None and family != metric:
        names.append(family)
    return tuple(name for name in names if name in floors)


def _evaluated(
    client: MlflowClient, model: str, version: str, metric: str, floored: tuple[str, ...] = ()
) -> Evaluated:
    mv = _version(client, model, version)
    if not mv.run_id:
        raise SeglabError(f"{model} version {version} has no run: its figures are unknown")
    try:
        run = client.get_run(mv.run_id)
    except MlflowException as exc:
        raise SeglabError(f"{model} version {version}: its run {mv.run_id} is gone") from exc
    metrics, run_tags = run.data.metrics, run.data.tags
    value = metrics.get(metric)
    if value is None or not math.isfinite(value):
        found = ", ".join(sorted(metrics)) or "none"
        raise SeglabError(
            f"{model} version {version}: run {mv.run_id} has no metric '{metric}' (it has: {found})"
        )
    version_tags = mv.tags or {}
    validity = metrics.get(VALIDITY)
    emptied = metrics.get(EMPTIED)
    values = {name: metrics.get(name) for name in floored}
    missing = [name for name, v in values.items() if v is None or not math.isfinite(v)]
    if missing:
        raise SeglabError(
            f"{model} version {version}: run {mv.run_id} has no metric '{missing[0]}' to check "
            "its promotion floor against"
        )
    return Evaluated(
        version=str(mv.version),
        run_id=mv.run_id,
        value=float(value),
        validity=float(validity) if validity is not None and math.isfinite(validity) else None,
        split=version_tags.get(EVAL_SPLIT_TAG) or run_tags.get(EVAL_SPLIT_TAG),
        dataset=(
            version_tags.get(EVAL_DATASET_TAG)
            or run_tags.get(EVAL_DATASET_TAG)
            or _data_hashes(run_tags)
        ),
        commit=run_tags.get("git.commit"),
        emptied=float(emptied) if emptied is not None and math.isfinite(emptied) else None,
        floored={name: float(v) for name, v in values.items() if v is not None},
    )


def _unfit(
    candidate: Evaluated,
    *,
    metric: str,
    goal: Goal,
    floors: Mapping[str, float],
    max_emptied: float | None,
) -> str | None:
    """Why ``candidate`` cannot be champion whatever the champion, or None: its predictions are
    empty, or a metric is on the wrong side of its floor (a maximum for lower-is-better)."""
    if max_emptied is not None and candidate.emptied is not None:
        if candidate.emptied > max_emptied:
            return (
                f"predictions empty: all background on {candidate.emptied:.1%} of the slices "
                f"with a heart ({EMPTIED} {candidate.emptied:.4g} > {max_emptied:g})"
            )
    for name, value in candidate.floored.items():
        if name not in floors:
            continue
        bound = floors[name]
        if (goal if name == metric else metric_goal(name)) == "max":
            if value < bound:
                return f"{name} {value:.4g} below the floor {bound:g}"
        elif value > bound:
            return f"{name} {value:.4g} above the ceiling {bound:g} (lower is better)"
    return None


def _check_comparable(model: str, candidate: Evaluated, champion: Evaluated) -> None:
    """Refuse a comparison of figures computed on different splits or data."""
    for what, tag in (("split", EVAL_SPLIT_TAG), ("dataset", EVAL_DATASET_TAG)):
        for side, evaluated in (("candidate", candidate), ("champion", champion)):
            if getattr(evaluated, what) is None:
                raise SeglabError(
                    f"{model} version {evaluated.version} ({side}) records no evaluation {what}: "
                    f"tag the version or its run with '{tag}'"
                )
        if getattr(candidate, what) != getattr(champion, what):
            raise SeglabError(
                f"{model}: candidate version {candidate.version} was evaluated on {what} "
                f"'{getattr(candidate, what)}', champion version {champion.version} on "
                f"'{getattr(champion, what)}': not comparable"
            )
    if champion.validity is not None and candidate.validity is None:
        raise SeglabError(
            f"{model}: candidate version {candidate.version} has no '{VALIDITY}' metric and the "
            f"champion (version {champion.version}) has: not comparable"
        )


def decide(
    model: str,
    candidate: Evaluated,
    champion: Evaluated | None,
    *,
    metric: str,
    goal: Goal,
    min_delta: float,
    floors: Mapping[str, float] | None = None,
    max_emptied: float | None = None,
) -> tuple[Outcome, str]:
    """The promotion rule. Raises :class:`SeglabError` when the two cannot be compared.

    A candidate below the floor of a metric in ``candidate.floored`` (``floors``; a ceiling
    for a lower-is-better metric), or whose ``emptied_fraction`` exceeds ``max_emptied``, is
    rejected before any comparison, the first version of a model included."""
    if champion is not None and candidate.version == champion.version:
        return "unchanged", f"version {candidate.version} is already the champion"
    unfit = _unfit(
        candidate, metric=metric, goal=goal, floors=floors or {}, max_emptied=max_emptied
    )
    if unfit is not None:
        return "rejected", unfit
    if champion is None:
        return "promoted", "first champion"
    _check_comparable(model, candidate, champion)
    gain = candidate.value - champion.value if goal == "max" else champion.value - candidate.value
    if gain <= 0 or gain < min_delta:
        needed = f"at least {min_delta:g} better" if min_delta > 0 else "better"
        return "rejected", f"{metric} not {needed} ({_signed(gain)})"
    if champion.validity is not None and candidate.validity is not None:
        if candidate.validity < champion.validity:
            return "rejected", (
                f"{VALIDITY} worse ({candidate.validity:.4g} < {champion.validity:.4g})"
            )
    return "promoted", f"{metric} better by {_signed(gain)}"


def _signed(gain: float) -> str:
    return f"{gain:+.4g}"


def _lock_path(uri: str) -> Path:
    """One lock file per tracking store on this machine (a store is named by its resolved URI)."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"seglab-promote-{digest}.lock"


@contextmanager
def store_lock(uri: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive lock for alias moves in the store ``uri``; waits up to ``timeout_s``."""
    path = _lock_path(uri)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SeglabError(
                        f"{path}: another promotion has held this lock for over {timeout_s:g} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _stamp(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y%m%dT%H%M%S%fZ")


def _records(mv: ModelVersion) -> list[Decision]:
    return [
        Decision.from_json(value)
        for key, value in (mv.tags or {}).items()
        if key.startswith(PROMOTION_TAG)
    ]


def _earlier_rejection(mv: ModelVersion, decision: Decision) -> str | None:
    """Time of the candidate's last decision if it was this same rejection (same champion, rule)."""
    records = sorted(_records(mv), key=lambda d: d.time)
    if not records:
        return None
    last = records[-1]
    same = (
        last.outcome == decision.outcome == "rejected"
        and (last.champion and last.champion.version)
        == (decision.champion and decision.champion.version)
        and (last.metric, last.goal, last.min_delta, last.floors, last.max_emptied)
        == (
            decision.metric,
            decision.goal,
            decision.min_delta,
            decision.floors,
            decision.max_emptied,
        )
    )
    return last.time if same else None


def _decide_now(
    client: MlflowClient,
    model: str,
    version: str | None,
    *,
    metric: str,
    goal: Goal,
    min_delta: float,
    commit: str,
    run_id: str | None,
    dry_run: bool,
    rules: PromotionParams,
) -> tuple[Decision, dict[str, str]]:
    aliases = _aliases(client, model)
    floored = floored_metrics(model, metric, rules.floors)
    picked = _candidate(client, model, aliases, version)
    candidate = _evaluated(client, model, picked, metric, floored)
    champion = _evaluated(client, model, aliases[CHAMPION], metric) if CHAMPION in aliases else None
    floors = {name: rules.floors[name] for name in floored}
    outcome, reason = decide(
        model,
        candidate,
        champion,
        metric=metric,
        goal=goal,
        min_delta=min_delta,
        floors=floors,
        max_emptied=rules.max_emptied,
    )
    decision = Decision(
        model=model,
        outcome=outcome,
        reason=reason,
        metric=metric,
        goal=goal,
        min_delta=min_delta,
        candidate=candidate,
        champion=champion,
        time=datetime.now(UTC).isoformat(timespec="microseconds"),
        git_commit=commit,
        promotion_run=run_id,
        dry_run=dry_run,
        floors=floors,
        max_emptied=rules.max_emptied,
    )
    return decision, aliases


def _record(client: MlflowClient, decision: Decision, aliases: dict[str, str]) -> Decision:
    """Write the decision onto the versions, then move the aliases it calls for."""
    model, version = decision.model, decision.candidate.version
    if decision.outcome == "unchanged":
        return decision
    repeat = _earlier_rejection(_version(client, model, version), decision)
    if repeat is not None:
        return replace(decision, repeat_of=repeat)
    stamp = _stamp(decision.time)
    client.set_model_version_tag(model, version, PROMOTION_TAG + stamp, decision.to_json())
    # The UI shows a version's description on its page: the latest decision, as a reader reads it.
    client.update_model_version(model, version, description=render_decision(decision))
    if decision.outcome != "promoted":
        return decision
    client.set_registered_model_alias(model, CHAMPION, version)
    if aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(model, CHALLENGER)
    if decision.champion is not None:
        successor = {"time": decision.time, "replaced_by": version, "run": decision.promotion_run}
        client.set_model_version_tag(
            model, decision.champion.version, DEMOTION_TAG + stamp, json.dumps(successor)
        )
    now = _aliases(client, model).get(CHAMPION)
    if now != version:
        raise SeglabError(
            f"{model}: champion moved to version {now} while version {version} was being "
            "promoted (a change that bypassed the promotion lock); run seglab promote again"
        )
    return decision


def _promote_one(
    client: MlflowClient,
    uri: str,
    model: str,
    version: str | None,
    *,
    metric: str | None,
    goal: Goal | None,
    min_delta: float,
    commit: str,
    run_id: str | None,
    dry_run: bool,
    lock_timeout_s: float,
    rules: PromotionParams,
) -> Decision:
    metric = metric or default_metric(model)
    options: dict[str, Any] = {
        "metric": metric,
        "goal": goal or metric_goal(metric),
        "min_delta": min_delta,
        "commit": commit,
        "run_id": run_id,
        "dry_run": dry_run,
        "rules": rules,
    }
    if dry_run:
        return _decide_now(client, model, version, **options)[0]
    with store_lock(uri, lock_timeout_s):
        for _ in range(ATTEMPTS):
            decision, aliases = _decide_now(client, model, version, **options)
            if _aliases(client, model).get(CHAMPION) == aliases.get(CHAMPION):
                return _record(client, decision, aliases)
    raise SeglabError(f"{model}: the champion alias kept changing during the promotion; retry")


def _options(
    root: Path,
    *,
    metric: str | None,
    goal: Goal | None,
    min_delta: float,
    dry_run: bool,
    lock_timeout_s: float,
    rules: PromotionParams,
) -> dict[str, Any]:
    """:func:`_promote_one`'s keywords, checked, that every decision of one call shares."""
    if not math.isfinite(min_delta) or min_delta < 0:
        raise ConfigError(f"min delta must be a finite number >= 0, not {min_delta}")
    if goal not in (None, "max", "min"):
        raise ConfigError(f"goal must be 'max' or 'min', not '{goal}'")
    return {
        "metric": metric,
        "goal": goal,
        "min_delta": min_delta,
        "commit": git_commit(root) or "unknown",
        "dry_run": dry_run,
        "lock_timeout_s": lock_timeout_s,
        "rules": rules,
    }


@contextmanager
def _promotion_run(
    tracking: TrackingParams,
    root: Path,
    name: str,
    settings: dict[str, object],
    params_file: Path | None,
) -> Iterator[str]:
    """The run a promotion records itself in (nested when called inside another stage's run)."""
    with tracked_run(
        tracking,
        PROMOTION_EXPERIMENT,
        name,
        root=root,
        params={f"promote.{key}": value for key, value in settings.items()},
        params_file=params_file,
        nested=mlflow.active_run() is not None,
    ) as run:
        yield run.info.run_id


def promote(
    model: str,
    tracking: TrackingParams,
    root: Path,
    *,
    version: str | None = None,
    metric: str | None = None,
    goal: Goal | None = None,
    min_delta: float = 0.0,
    dry_run: bool = False,
    params_file: Path | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    rules: PromotionParams | None = None,
) -> Decision:
    """Decide whether ``version`` (default: the challenger, else the newest) replaces the
    champion of ``model``, record the decision on the versions and move the aliases.

    ``rules`` (default: :class:`~seglab.config.PromotionParams`' defaults) are the floors and
    the emptied share no candidate may pass, whatever the champion. The decision is also an
    MLflow run in :data:`PROMOTION_EXPERIMENT` carrying the lineage of the checkout that made
    it. ``dry_run`` decides and changes nothing (no run, no tag, no alias).
    """
    rules = rules or PromotionParams()
    options = _options(
        root, metric=metric, goal=goal, min_delta=min_delta, dry_run=dry_run,
        lock_timeout_s=lock_timeout_s, rules=rules,
    )  # fmt: skip
    client, uri = _client(tracking, root)
    _aliases(client, model)  # an unknown model is refused before any run is opened
    metric = options["metric"] = metric or default_metric(model)
    goal = options["goal"] = goal or metric_goal(metric)
    if dry_run:
        return _promote_one(client, uri, model, version, run_id=None, **options)
    settings = {"model": model, "version": version or "default", "metric": metric, "goal": goal}
    with _promotion_run(
        tracking, root, f"promote {model}", {**settings, **_settings(min_delta, rules)}, params_file
    ) as run_id:
        decision = _promote_one(client, uri, model, version, run_id=run_id, **options)
        _log_decisions(client, run_id, [decision])
    return decision


def promote_all(
    tracking: TrackingParams,
    root: Path,
    *,
    metric: str | None = None,
    goal: Goal | None = None,
    min_delta: float = 0.0,
    dry_run: bool = False,
    params_file: Path | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    prefix: str = "",
    rules: PromotionParams | None = None,
) -> dict[str, Decision | SeglabError]:
    """:func:`promote` every registered model whose name starts with ``prefix`` (its default
    candidate), in one run; each study's pipeline promotes its own family (``acdc-``, ``lgg-``).

    A model that cannot be compared is reported (its :class:`SeglabError`) and the others still
    proceed: after ``dvc repro``, every comparable model fit to be champion has one (``rules``:
    see :func:`promote`).
    """
    rules = rules or PromotionParams()
    options = _options(
        root, metric=metric, goal=goal, min_delta=min_delta, dry_run=dry_run,
        lock_timeout_s=lock_timeout_s, rules=rules,
    )  # fmt: skip
    client, uri = _client(tracking, root)
    registered = (m.name for m in client.search_registered_models())
    models = sorted(name for name in registered if name.startswith(prefix))

    def one(model: str, run_id: str | None) -> Decision | SeglabError:
        try:
            return _promote_one(client, uri, model, None, run_id=run_id, **options)
        except SeglabError as exc:
            return exc

    if dry_run:
        return {model: one(model, None) for model in models}
    settings = {"metric": metric or "default", "goal": goal or "default"}
    rule = _settings(min_delta, rules)
    results: dict[str, Decision | SeglabError] = {}
    # One run for the whole pass (the summary), one child run per model named after it.
    with _promotion_run(
        tracking, root, f"promote {prefix}*", {"model": f"{prefix}*", **settings, **rule},
        params_file,
    ) as parent:  # fmt: skip
        for model in models:
            with _promotion_run(
                tracking, root, f"promote {model}", {"model": model, **settings, **rule}, None
            ) as run_id:
                results[model] = result = one(model, run_id)
                if isinstance(result, Decision):
                    _log_decisions(client, run_id, [result])
                else:
                    client.set_tag(run_id, f"promotion.{model}", f"refused: {result}")
        _log_decisions(client, parent, [d for d in results.values() if isinstance(d, Decision)])
        refused = {m: str(e) for m, e in results.items() if isinstance(e, SeglabError)}
        if refused:
            log_dict(refused, "refused.json")
    return results


def _settings(min_delta: float, rules: PromotionParams) -> dict[str, object]:
    """The promotion rule's settings, as the promotion run's params."""
    floors = ",".join(f"{name}={value:g}" for name, value in sorted(rules.floors.items()))
    return {"min_delta": min_delta, "floors": floors or "none", "max_emptied": rules.max_emptied}


def _log_decisions(client: MlflowClient, run_id: str, decisions: list[Decision]) -> None:
    """The promotion run's own record: one tag per model and the decisions as JSON."""
    for d in decisions:
        client.set_tag(run_id, f"promotion.{d.model}", f"{d.outcome} v{d.candidate.version}")
    log_dict({d.model: asdict(d) for d in decisions}, "decisions.json")


def set_alias(
    tracking: TrackingParams,
    root: Path,
    model: str,
    alias: str,
    version: str,
    *,
    reason: str,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> str | None:
    """Point ``alias`` of ``model`` at ``version`` (e.g. a search's best as ``challenger``),
    under the promotion lock, and record the move in the version's tag ``alias.<UTC stamp>``:
    the alias, the version it pointed at before, ``reason``, the time and the git commit.

    ``champion`` is refused: it moves only through :func:`promote`, which compares the figures.
    Returns the version the alias pointed at before (None when it was unset).
    """
    if alias == CHAMPION:
        raise ConfigError(
            f"{model}: the {CHAMPION} alias moves only through seglab promote, which compares "
            "the candidate with the champion"
        )
    client, uri = _client(tracking, root)
    _aliases(client, model)  # an unknown model is refused as such
    version = str(_version(client, model, version).version)
    commit = git_commit(root) or "unknown"
    with store_lock(uri, lock_timeout_s):
        before = _aliases(client, model).get(alias)
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        record = {
            "alias": alias,
            "version": version,
            "previous": before,
            "reason": reason,
            "time": now,
            "git_commit": commit,
        }
        client.set_model_version_tag(
            model, version, ALIAS_TAG + _stamp(now), json.dumps(record, sort_keys=True)
        )
        client.set_registered_model_alias(model, alias, version)
    return before


def promotion_history(model: str, tracking: TrackingParams, root: Path) -> History:
    """Every recorded decision about ``model``, oldest first, with its current aliases."""
    client, _ = _client(tracking, root)
    aliases = _aliases(client, model)
    decisions = [d for mv in _versions(client, model) for d in _records(mv)]
    return History(model, aliases, sorted(decisions, key=lambda d: d.time))


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_decision(d: Decision) -> str:
    """What a promotion decided and on which figures, for the terminal."""
    was = f"version {d.champion.version}" if d.champion else "none"
    candidate = f"version {d.candidate.version}"
    # A dry run moved nothing: it says what would have happened.
    keep, reject, promote, before = (
        ("would keep", "would reject", "would promote", "now")
        if d.dry_run
        else ("kept", "rejected", "promoted", "was")
    )
    kept = f"{keep} {was} as {CHAMPION}" if d.champion else f"no {CHAMPION}"
    head = {
        "promoted": f"{promote} {candidate} to {CHAMPION} ({before} {was})",
        "rejected": f"{kept}; {reject} {candidate}",
        "unchanged": f"nothing to do: {candidate} is already {CHAMPION}",
    }[d.outcome]
    direction = "higher" if d.goal == "max" else "lower"
    lines = [
        f"{d.model}: {head}",
        f"  reason: {d.reason}",
        f"  {d.metric} ({direction} is better, min delta {d.min_delta:g}): "
        f"candidate {_figure(d.candidate.value)}, "
        f"champion {_figure(d.champion.value if d.champion else None)}",
    ]
    if d.candidate.validity is not None or (d.champion and d.champion.validity is not None):
        lines.append(
            f"  {VALIDITY}: candidate {_figure(d.candidate.validity)}, "
            f"champion {_figure(d.champion.validity if d.champion else None)}"
        )
    required = [
        f"{name} {'>=' if (d.goal if name == d.metric else metric_goal(name)) == 'max' else '<='} "
        f"{bound:g} (candidate {_figure(d.candidate.floored.get(name))})"
        for name, bound in d.floors.items()
    ]
    if d.max_emptied is not None and d.candidate.emptied is not None:
        required.append(f"{EMPTIED} <= {d.max_emptied:g} (candidate {d.candidate.emptied:.4g})")
    if required:
        lines.append(f"  required of any champion: {'; '.join(required)}")
    lines.append(
        f"  evaluated on split {d.candidate.split or '?'}, dataset {d.candidate.dataset or '?'}"
    )
    if d.dry_run:
        lines.append("  dry run: nothing was changed")
    elif d.repeat_of:
        lines.append(f"  same decision as {d.repeat_of}: not recorded again")
    return "\n".join(lines)


def render_results(results: dict[str, Decision | SeglabError]) -> str:
    """What ``promote --all`` decided, model by model (refusals as one line each)."""
    lines = [
        render_decision(r) if isinstance(r, Decision) else f"{model}: refused: {r}"
        for model, r in results.items()
    ]
    refused = sum(not isinstance(r, Decision) for r in results.values())
    return "\n".join([*lines, f"{len(results)} registered models, {refused} refused"])


def _short(commit: str | None) -> str:
    return (commit or "-")[:8]


HISTORY_COLUMNS = (
    "time (UTC)",
    "version",
    "decision",
    "was",
    "metric",
    "candidate",
    "champion",
    "validity",
    "by commit",
    "model commit",
)


def render_history(history: History) -> str:
    """A table of the decisions (time, version, outcome, previous champion, figures, commits)."""
    aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(history.aliases.items())) or "no aliases"
    rows = [HISTORY_COLUMNS]
    for d in history.decisions:
        validity = _figure(d.candidate.validity)
        if d.champion is not None:
            validity += f"/{_figure(d.champion.validity)}"
        rows.append(
            (
                d.time[:19].replace("T", " "),
                d.candidate.version,
                d.outcome,
                d.champion.version if d.champion else "-",
                d.metric,
                _figure(d.candidate.value),
                _figure(d.champion.value if d.champion else None),
                validity,
                _short(d.git_commit),
                _short(d.candidate.commit),
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(HISTORY_COLUMNS))]
    lines = [f"{history.model}: {aliases}"]
    if not history.decisions:
        return "\n".join([*lines, "no promotion decisions recorded"])
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def resolve_version(uri: str, tracking: TrackingParams, root: Path) -> ModelVersion:
    """The registered version behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    match = _VERSION_URI.match(uri)
    if match is None:
        raise ConfigError(f"{uri}: not a model version URI (models:/NAME@ALIAS or models:/NAME/N)")
    client, _ = _client(tracking, root)
    name, alias = match["name"], match["alias"]
    if alias is None:
        return _version(client, name, match["version"])
    aliases = _aliases(client, name)
    if alias not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise SeglabError(f"{uri}: model '{name}' has no alias '{alias}' (aliases: {known})")
    return _version(client, name, aliases[alias])


def version_run_tags(version: ModelVersion, tracking: TrackingParams, root: Path) -> dict[str, str]:
    """The tags of the run that logged ``version`` (choices made in training, e.g. a
    segmenter's clean-up); empty when the run is gone."""
    client, _ = _client(tracking, root)
    try:
        return dict(client.get_run(version.run_id).data.tags) if version.run_id else {}
    except MlflowException:
        return {}


def best_champion(prefix: str, tracking: TrackingParams, root: Path) -> str:
    """``models:/NAME@champion`` of the model named ``PREFIX*`` whose champion scores best on
    its registry metric (:func:`default_metric`), e.g. the best of the four segmenters."""
    client, uri = _client(tracking, root)
    scored: list[tuple[float, str]] = []
    for model in sorted(m.name for m in client.search_registered_models()):
        champion = _aliases(client, model).get(CHAMPION) if model.startswith(prefix) else None
        if champion is None:
            continue
        metric = default_metric(model)
        value = _evaluated(client, model, champion, metric).value
        scored.append((value if metric_goal(metric) == "max" else -value, model))
    if not scored:
        raise SeglabError(f"no registered model named {prefix}* has a champion in {uri}")
    return f"models:/{max(scored)[1]}@{CHAMPION}"


def load_model(
    uri: str,
    tracking: TrackingParams,
    root: Path,
    *,
    map_location: str | torch.device | None = None,
) -> torch.nn.Module:
    """A logged torch model: ``models:/NAME@champion`` (how stages take a model),
    ``models:/NAME/N``, ``runs:/RUN_ID/PATH`` or any other URI MLflow can load."""
    import mlflow.pytorch

    if uri.startswith("models:/") and _VERSION_URI.match(uri):
        resolve_version(uri, tracking, root)  # a clear error for an unknown model or alias
    else:
        configure(tracking, root)
    try:
        return mlflow.pytorch.load_model(uri, map_location=map_location)
    except (MlflowException, OSError) as exc:
        raise SeglabError(f"{uri}: cannot load the model ({exc})") from exc
