"""Promotion, its recorded history and loading by alias, against a real SQLite registry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tests.helpers import git

from seglab.cli import main
from seglab.config import PromotionParams, TrackingParams
from seglab.errors import ConfigError, SeglabError
from seglab.tracking import registry, runs
from seglab.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    PROMOTION_EXPERIMENT,
    Decision,
    load_model,
    promote,
    promote_all,
    promotion_history,
    render_decision,
    render_history,
    resolve_version,
)
from seglab.tracking.runs import log_metrics, tracked_run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module (its schema takes seconds); tests use their own model names."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runs, "_launched", None)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text("profile: quick\n")
    git(root, "init", "-q")
    git(root, "add", "params.yaml")
    git(root, "commit", "-q", "-m", "init")
    return root


def client_of(store: str) -> MlflowClient:
    return MlflowClient(tracking_uri=store, registry_uri=store)


def add_version(
    store: str,
    project: Path,
    model: str,
    metrics: dict[str, float],
    *,
    split: str | None = "test",
    dataset: str | None = "d41d8cd98f00b204e9800998ecf8427e.dir",
    run_tags: dict[str, str] | None = None,
) -> str:
    """A training run with its metrics, registered as a new version of ``model``."""
    with tracked_run(
        TrackingParams(uri=store), "registry-tests", model, root=project, tags=run_tags
    ) as run:
        if metrics:
            log_metrics(metrics)
    client = client_of(store)
    try:
        client.create_registered_model(model)
    except MlflowException:
        pass  # registered by an earlier version
    tags = {}
    if split is not None:
        tags[registry.EVAL_SPLIT_TAG] = split
    if dataset is not None:
        tags[registry.EVAL_DATASET_TAG] = dataset
    version = client.create_model_version(
        model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
    )
    return str(version.version)


def champion_of(store: str, model: str) -> str | None:
    champion = client_of(store).get_registered_model(model).aliases.get(CHAMPION)
    return None if champion is None else str(champion)


def test_first_version_becomes_champion_and_the_decision_is_a_run(
    store: str, project: Path
) -> None:
    model = "acdc-nvae"
    add_version(store, project, model, {"dice_mean": 0.7, "anatomical_validity": 0.9})
    decision = promote(model, TrackingParams(uri=store), project)

    assert decision.outcome == "promoted"
    assert decision.reason == "first champion"
    assert decision.champion is None
    assert decision.metric == "dice_mean" and decision.goal == "max"
    assert champion_of(store, model) == "1"
    assert decision.git_commit == git(project, "rev-parse", "HEAD")

    run = client_of(store).get_run(decision.promotion_run)
    assert client_of(store).get_experiment(run.info.experiment_id).name == PROMOTION_EXPERIMENT
    assert run.info.status == "FINISHED"
    assert run.data.tags["git.commit"] == decision.git_commit
    assert run.data.tags["promotion.acdc-nvae"] == "promoted v1"
    assert run.data.params["promote.model"] == model

    tags = client_of(store).get_model_version(model, "1").tags
    recorded = [Decision.from_json(v) for k, v in tags.items() if k.startswith("promotion.")]
    assert recorded == [decision]


def test_better_challenger_replaces_the_champion(store: str, project: Path) -> None:
    model = "acdc-nvae-corrector"
    tracking = TrackingParams(uri=store)
    add_version(store, project, model, {"dice_mean": 0.70, "anatomical_validity": 0.80})
    promote(model, tracking, project)
    add_version(store, project, model, {"dice_mean": 0.75, "anatomical_validity": 0.80})
    newest = add_version(store, project, model, {"dice_mean": 0.10})  # newer, not the challenger
    client_of(store).set_registered_model_alias(model, CHALLENGER, "2")

    decision = promote(model, tracking, project)
    assert decision.outcome == "promoted"
    assert decision.candidate.version == "2" and newest == "3"
    assert decision.champion is not None and decision.champion.version == "1"
    assert decision.candidate.value == 0.75 and decision.champion.value == 0.70
    aliases = client_of(store).get_registered_model(model).aliases
    # the promoted challenger is no longer a challenger
    assert {a: str(v) for a, v in aliases.items()} == {CHAMPION: "2"}
    demoted = client_of(store).get_model_version(model, "1").tags
    (successor,) = [json.loads(v) for k, v in demoted.items() if k.startswith("demotion.")]
    assert successor["replaced_by"] == "2"

    history = promotion_history(model, tracking, project)
    assert [(d.candidate.version, d.outcome) for d in history.decisions] == [
        ("1", "promoted"),
        ("2", "promoted"),
    ]
    assert history.aliases == {CHAMPION: "2"}
    table = render_history(history)
    assert table.splitlines()[0] == f"{model}: champion=v2"
    assert "time (UTC)" in table and "0.75" in table and "0.8/0.8" in table


def test_worse_or_not_enough_better_is_rejected_and_recorded_once(
    store: str, project: Path
) -> None:
    model = "acdc-segmenter-unet"
    tracking = TrackingParams(uri=store)
    add_version(store, project, model, {"dice_mean": 0.80})
    promote(model, tracking, project)

    add_version(store, project, model, {"dice_mean": 0.79})
    worse = promote(model, tracking, project)
    assert worse.outcome == "rejected"
    assert "dice_mean not better (-0.01)" in worse.reason
    again = promote(model, tracking, project)
    assert again.outcome == "rejected" and again.repeat_of == worse.time

    add_version(store, project, model, {"dice_mean": 0.805})
    small = promote(model, tracking, project, min_delta=0.01)
    assert small.outcome == "rejected"
    assert "not at least 0.01 better" in small.reason
    enough = promote(model, tracking, project, version="3", min_delta=0.001)
    assert enough.outcome == "promoted"
    assert champion_of(store, model) == "3"
    same = promote(model, tracking, project)
    assert same.outcome == "unchanged"

    outcomes = [
        (d.candidate.version, d.outcome)
        for d in promotion_history(model, tracking, project).decisions
    ]
    assert outcomes == [("1", "promoted"), ("2", "rejected"), ("3", "rejected"), ("3", "promoted")]


def test_anatomical_validity_must_not_get_worse(store: str, project: Path) -> None:
    model = "acdc-nvae-context"
    tracking = TrackingParams(uri=store)
    add_version(store, project, model, {"dice_mean": 0.80, "anatomical_validity": 0.95})
    promote(model, tracking, project)
    add_version(store, project, model, {"dice_mean": 0.90, "anatomical_validity": 0.90})
    decision = promote(model, tracking, project)
    assert decision.outcome == "rejected"
    assert decision.reason == "anatomical_validity worse (0.9 < 0.95)"
    assert champion_of(store, model) == "1"

    add_version(store, project, model, {"dice_mean": 0.90})
    with pytest.raises(SeglabError, match="version 3 has no 'anatomical_validity' metric"):
        promote(model, tracking, project)


def test_lgg_models_use_iou_and_lower_is_better_metrics_invert(store: str, project: Path) -> None:
    tracking = TrackingParams(uri=store)
    model = "lgg-unet-resnet18"
    add_version(store, project, model, {"iou": 0.6, "dice_mean": 0.9})
    add_version(store, project, model, {"iou": 0.7, "dice_mean": 0.1})
    promote(model, tracking, project, version="1")
    decision = promote(model, tracking, project)
    assert decision.metric == "iou"
    assert decision.outcome == "promoted"  # no validity on lgg runs: no validity guard

    hd = "acdc-segmenter-resunet"
    add_version(store, project, hd, {"dice_mean": 0.8, "hd95_mean": 5.0})
    add_version(store, project, hd, {"dice_mean": 0.8, "hd95_mean": 4.0})
    promote(hd, tracking, project, version="1", metric="hd95_mean")
    lower = promote(hd, tracking, project, metric="hd95_mean")
    assert lower.goal == "min" and lower.outcome == "promoted"
    assert lower.reason == "hd95_mean better by +1"
    forced = promote(hd, tracking, project, version="1", metric="hd95_mean", goal="max")
    assert forced.outcome == "promoted"


def test_no_candidate_below_the_floor_or_with_empty_predictions_becomes_champion(
    store: str, project: Path
) -> None:
    """The quick profile's collapsed NVAE (Dice 0, every mask empty, validity 1) was made
    champion as the first version; a floor and the emptied share keep it out, first or not."""
    tracking = TrackingParams(uri=store)
    model = "acdc-nvae-floor"
    collapsed = {"dice_mean": 0.0, "anatomical_validity": 1.0, "emptied_fraction": 1.0}
    add_version(store, project, model, collapsed)
    empty = promote(model, tracking, project)
    assert empty.outcome == "rejected" and empty.champion is None
    assert empty.reason == (
        "predictions empty: all background on 100.0% of the slices with a heart "
        "(emptied_fraction 1 > 0.5)"
    )
    text = render_decision(empty)
    assert text.splitlines()[0] == f"{model}: no champion; rejected version 1"
    assert "required of any champion: dice_mean >= 0.5 (candidate 0)" in text
    assert champion_of(store, model) is None
    assert [d.outcome for d in promotion_history(model, tracking, project).decisions] == [
        "rejected"
    ]

    add_version(store, project, model, {"dice_mean": 0.3, "emptied_fraction": 0.0})
    low = promote(model, tracking, project)
    assert low.outcome == "rejected" and low.reason == "dice_mean 0.3 below the floor 0.5"
    add_version(store, project, model, {"dice_mean": 0.6, "emptied_fraction": 0.02, "model_mb": 1})
    assert promote(model, tracking, project).reason == "first champion"
    assert champion_of(store, model) == "3"

    # Ranking on size does not lift the family's floor: a tiny model that segments nothing.
    add_version(store, project, model, {"dice_mean": 0.2, "model_mb": 0.01})
    small = promote(model, tracking, project, metric="model_mb")
    assert small.outcome == "rejected" and small.reason == "dice_mean 0.2 below the floor 0.5"
    # A lower-is-better metric's floor is a ceiling; no default one.
    hd = "acdc-segmenter-ceiling"
    add_version(store, project, hd, {"dice_mean": 0.8, "hd95_mean": 12.0})
    assert promote(hd, tracking, project, metric="hd95_mean").outcome == "promoted"
    add_version(store, project, hd, {"dice_mean": 0.8, "hd95_mean": 11.0})
    rules = PromotionParams(floors={"dice_mean": 0.5, "hd95_mean": 10.0})
    far = promote(hd, tracking, project, metric="hd95_mean", rules=rules)
    assert far.reason == "hd95_mean 11 above the ceiling 10 (lower is better)"
    assert champion_of(store, hd) == "1"

    # The LGG models' IoU: the floor is Dice 0.5's overlap, 1/3.
    lgg = "lgg-floor-resnet18"
    add_version(store, project, lgg, {"iou": 0.2, "dice_mean": 0.33})
    assert promote(lgg, tracking, project).reason == "iou 0.2 below the floor 0.3333"
    add_version(store, project, lgg, {"iou": 0.4, "dice_mean": 0.57})
    assert promote(lgg, tracking, project).outcome == "promoted"
    assert champion_of(store, lgg) == "2"


def test_promote_reads_its_floors_from_the_params(
    tmp_path: Path, project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'floors.db'}"
    add_version(store, project, "acdc-nvae", {"dice_mean": 0.6})
    params = project / "params.yaml"
    params.write_text(
        f"tracking:\n  uri: {store}\npromotion:\n  floors: {{dice_mean: 0.7}}\n  max_emptied: 0.1\n"
    )
    monkeypatch.chdir(project)
    report = tmp_path / "promotion.json"
    argv = ["promote", "--all", "--prefix", "acdc-", "--params", str(params), "--out", str(report)]
    assert main(argv) == 0  # a rejection is a decision, not a refusal
    out = capsys.readouterr().out
    assert "acdc-nvae: no champion; rejected version 1" in out
    assert "reason: dice_mean 0.6 below the floor 0.7" in out
    recorded = json.loads(report.read_text())["acdc-nvae"]
    assert recorded["outcome"] == "rejected" and recorded["floors"] == {"dice_mean": 0.7}
    assert recorded["max_emptied"] == 0.1
    assert champion_of(store, "acdc-nvae") is None


def test_dry_run_changes_nothing(
    store: str, project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = "acdc-segmenter-attunet"
    tracking = TrackingParams(uri=store)
    add_version(store, project, model, {"dice_mean": 0.5})
    client = client_of(store)
    experiment = client.get_experiment_by_name(PROMOTION_EXPERIMENT)
    before = len(client.search_runs([experiment.experiment_id])) if experiment else 0

    decision = promote(model, tracking, project, dry_run=True)
    assert decision.outcome == "promoted" and decision.dry_run
    assert decision.promotion_run is None
    assert champion_of(store, model) is None
    assert not [k for k in client.get_model_version(model, "1").tags if k.startswith("promotion.")]
    experiment = client.get_experiment_by_name(PROMOTION_EXPERIMENT)
    after = len(client.search_runs([experiment.experiment_id])) if experiment else 0
    assert after == before

    params = project / "params.yaml"
    params.write_text(f"tracking:\n  uri: {store}\n")
    monkeypatch.chdir(project)
    assert main(["promote", model, "--dry-run", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert f"{model}: would promote version 1 to champion (now none)" in out
    assert "promoted" not in out and "dry run: nothing was changed" in out
    assert champion_of(store, model) is None


def test_refusals_are_clear(store: str, project: Path) -> None:
    tracking = TrackingParams(uri=store)
    with pytest.raises(SeglabError, match="registered model 'acdc-nope' not found"):
        promote("acdc-nope", tracking, project)

    model = "acdc-segmenter-swinunetr"
    add_version(store, project, model, {"dice_mean": 0.5})
    promote(model, tracking, project)
    with pytest.raises(SeglabError, match="has no version 9"):
        promote(model, tracking, project, version="9")

    add_version(store, project, model, {"iou": 0.9})
    with pytest.raises(
        SeglabError, match=r"version 2: run \w+ has no metric 'dice_mean' \(it has: iou\)"
    ):
        promote(model, tracking, project)

    add_version(store, project, model, {"dice_mean": 0.9}, split="val")
    with pytest.raises(SeglabError, match="evaluated on split 'val', champion version 1 on 'test'"):
        promote(model, tracking, project)

    add_version(store, project, model, {"dice_mean": 0.9}, dataset="0123.dir")
    with pytest.raises(SeglabError, match="evaluated on dataset '0123.dir'"):
        promote(model, tracking, project)

    add_version(store, project, model, {"dice_mean": 0.9}, split=None)
    with pytest.raises(SeglabError, match="version 5 \\(candidate\\) records no evaluation split"):
        promote(model, tracking, project)

    with pytest.raises(ConfigError, match="unknown direction for metric 'loss'"):
        promote(model, tracking, project, metric="loss")
    with pytest.raises(ConfigError, match="no default promotion metric for model 'other'"):
        registry.default_metric("other")
    with pytest.raises(ConfigError, match="min delta"):
        promote(model, tracking, project, min_delta=-1)
    assert champion_of(store, model) == "1"  # no refusal moved anything


def test_dataset_identity_falls_back_to_the_runs_dvc_hashes(store: str, project: Path) -> None:
    model = "acdc-segmenter-fallback"
    tracking = TrackingParams(uri=store)
    hashes = {"data.acdc.dvc_md5": "aaa.dir", "data.acdcseg.dvc_md5": "bbb.dir"}
    add_version(store, project, model, {"dice_mean": 0.5}, dataset=None, run_tags=hashes)
    promote(model, tracking, project)
    add_version(store, project, model, {"dice_mean": 0.6}, dataset=None, run_tags=hashes)
    decision = promote(model, tracking, project)
    assert decision.outcome == "promoted"
    assert decision.candidate.dataset == "acdc=aaa.dir,acdcseg=bbb.dir"

    changed = {**hashes, "data.acdc.dvc_md5": "ccc.dir"}
    add_version(store, project, model, {"dice_mean": 0.7}, dataset=None, run_tags=changed)
    with pytest.raises(SeglabError, match="dataset 'acdc=ccc.dir,acdcseg=bbb.dir'"):
        promote(model, tracking, project)


def test_promote_all_gives_every_comparable_model_a_champion(
    tmp_path: Path, project: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'all.db'}"
    tracking = TrackingParams(uri=store)
    add_version(store, project, "acdc-nvae", {"dice_mean": 0.6})
    add_version(store, project, "lgg-fpn-resnet18", {"iou": 0.5})
    add_version(store, project, "lgg-fpn-resnet18", {"iou": 0.6})
    add_version(store, project, "mystery", {"dice_mean": 0.6})

    # each pipeline promotes its own family
    assert set(promote_all(tracking, project, prefix="lgg-", dry_run=True)) == {"lgg-fpn-resnet18"}
    results = promote_all(tracking, project)
    assert {m: getattr(r, "outcome", None) for m, r in results.items()} == {
        "acdc-nvae": "promoted",
        "lgg-fpn-resnet18": "promoted",
        "mystery": None,
    }
    assert isinstance(results["mystery"], ConfigError)
    assert champion_of(store, "acdc-nvae") == "1"
    assert champion_of(store, "lgg-fpn-resnet18") == "2"  # the newest, first champion
    # One run for the pass, a child run per model named after it; the decision a reader reads
    # is the version's description.
    client = client_of(store)
    experiment = client.get_experiment_by_name(PROMOTION_EXPERIMENT).experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    assert set(runs) == {"promote *", "promote acdc-nvae", "promote lgg-fpn-resnet18",
                         "promote mystery"}  # fmt: skip
    parent = runs["promote *"].info.run_id
    for model in ("acdc-nvae", "lgg-fpn-resnet18", "mystery"):
        assert runs[f"promote {model}"].data.tags["mlflow.parentRunId"] == parent
    assert runs["promote acdc-nvae"].data.tags["promotion.acdc-nvae"] == "promoted v1"
    assert runs["promote mystery"].data.tags["promotion.mystery"].startswith("refused: ")
    description = client.get_model_version("lgg-fpn-resnet18", "2").description
    assert description.startswith("lgg-fpn-resnet18: promoted version 2 to champion")

    params = project / "params.yaml"
    params.write_text(f"tracking:\n  uri: {store}\n")
    monkeypatch.chdir(project)
    report = tmp_path / "reports" / "promotion.json"
    argv = ["promote", "--all", "--params", str(params), "--out", str(report)]
    assert main(argv) == 1  # mystery is still refused
    out = capsys.readouterr().out
    assert "acdc-nvae: nothing to do: version 1 is already champion" in out
    assert "mystery: refused: no default promotion metric" in out
    assert out.rstrip().endswith("3 registered models, 1 refused")
    recorded = json.loads(report.read_text())
    assert recorded["acdc-nvae"]["outcome"] == "unchanged"
    assert recorded["lgg-fpn-resnet18"]["candidate"]["version"] == "2"
    assert recorded["mystery"] == {
        "refused": "no default promotion metric for model 'mystery': pass --metric"
    }
    # The DVC stage records refusals without failing the pipeline.
    assert main([*argv, "--allow-refusals"]) == 0
    assert "mystery: refused" in capsys.readouterr().out

    assert main(["registry", "history", "lgg-fpn-resnet18", "--params", str(params)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "lgg-fpn-resnet18: champion=v2"
    assert table[1].split()[:3] == ["time", "(UTC)", "version"]
    assert table[2].split()[2:5] == ["2", "promoted", "-"]
    assert main(["registry", "history", "nope", "--params", str(params)]) == 2
    assert "registered model 'nope' not found" in capsys.readouterr().err


def test_load_by_alias(store: str, project: Path) -> None:
    model = "acdc-nvae-loadable"
    tracking = TrackingParams(uri=store)
    net = torch.nn.Linear(3, 2)
    with tracked_run(tracking, "registry-tests", "loadable", root=project) as run:
        log_metrics({"dice_mean": 0.9})
        mlflow.pytorch.log_model(
            net,
            name="model",
            registered_model_name=model,
            input_example=np.zeros((2, 3), dtype=np.float32),  # batch 1 would be specialised
            pip_requirements=["torch"],
        )
        client_of(store).set_model_version_tag(model, "1", registry.EVAL_SPLIT_TAG, "test")
    promote(model, tracking, project)

    loaded = load_model(f"models:/{model}@champion", tracking, project)
    x = torch.randn(4, 3)
    torch.testing.assert_close(loaded(x), net(x))
    assert resolve_version(f"models:/{model}@champion", tracking, project).run_id == run.info.run_id
    assert str(resolve_version(f"models:/{model}/1", tracking, project).version) == "1"

    with pytest.raises(SeglabError, match=r"has no alias 'challenger' \(aliases: champion\)"):
        load_model(f"models:/{model}@challenger", tracking, project)
    with pytest.raises(SeglabError, match="registered model 'acdc-missing' not found"):
        load_model("models:/acdc-missing@champion", tracking, project)
    with pytest.raises(ConfigError, match="not a model version URI"):
        resolve_version("acdc-nvae@champion", tracking, project)


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlflow import MlflowClient
    from seglab.config import PromotionParams, TrackingParams
    from seglab.tracking.registry import promote

    store, root, model, version, go = sys.argv[1:]
    slow = MlflowClient.set_registered_model_alias

    def set_alias_slowly(self, *args):  # widen the window between deciding and moving the alias
        time.sleep(1.0)
        return slow(self, *args)

    MlflowClient.set_registered_model_alias = set_alias_slowly
    Path(f"{go}.{version}.ready").touch()
    while not Path(go).exists():
        time.sleep(0.01)
    decision = promote(model, TrackingParams(uri=store), Path(root), version=version)
    print(decision.outcome)
    """
)


@pytest.mark.slow
def test_two_promotions_at_once_leave_the_aliases_consistent(tmp_path: Path, project: Path) -> None:
    store = f"sqlite:///{tmp_path / 'race.db'}"
    tracking = TrackingParams(uri=store)
    model = "acdc-nvae-race"
    add_version(store, project, model, {"dice_mean": 0.5})
    promote(model, tracking, project)
    add_version(store, project, model, {"dice_mean": 0.6})
    add_version(store, project, model, {"dice_mean": 0.7})
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, store, str(project), model, version, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("2", "3")
    ]
    deadline = time.monotonic() + 180  # imports on a loaded 2-core machine
    while not all(Path(f"{go}.{v}.ready").exists() for v in ("2", "3")):  # both at the start
        assert time.monotonic() < deadline and all(r.poll() is None for r in racers)
        time.sleep(0.05)
    go.touch()
    outputs = [racer.communicate(timeout=120) for racer in racers]
    for racer, (_, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, err

    # whichever went first, the better candidate (v3) must end as champion ...
    assert champion_of(store, model) == "3"
    # ... and the history must be a chain: each decision saw the champion the previous one left
    history = promotion_history(model, tracking, project)
    champion = None
    for decision in history.decisions:
        assert (decision.champion.version if decision.champion else None) == champion
        if decision.outcome == "promoted":
            champion = decision.candidate.version
    assert champion == "3"
    assert len(history.decisions) == 3


def test_set_alias_records_the_move_and_waits_for_the_promotion_lock(
    store: str, project: Path
) -> None:
    """How a search names its best model challenger: recorded like a promotion, serialised with
    promotions, and never the way to move champion."""
    tracking = TrackingParams(uri=store)
    model = "acdc-nvae-alias"
    for dice in (0.6, 0.7):
        add_version(store, project, model, {"dice_mean": dice})
    assert registry.set_alias(tracking, project, model, CHALLENGER, "1", reason="trial 0") is None
    assert registry.set_alias(tracking, project, model, CHALLENGER, "2", reason="trial 4") == "1"
    client = client_of(store)
    assert str(client.get_registered_model(model).aliases[CHALLENGER]) == "2"
    (record,) = [
        json.loads(v)
        for k, v in client.get_model_version(model, "2").tags.items()
        if k.startswith(registry.ALIAS_TAG)
    ]
    assert record["alias"] == CHALLENGER and record["version"] == "2"
    assert record["previous"] == "1" and record["reason"] == "trial 4"
    assert record["git_commit"] == git(project, "rev-parse", "HEAD") and record["time"]

    with pytest.raises(ConfigError, match="champion alias moves only through seglab promote"):
        registry.set_alias(tracking, project, model, CHAMPION, "2", reason="shortcut")
    with pytest.raises(SeglabError, match="has no version 9"):
        registry.set_alias(tracking, project, model, CHALLENGER, "9", reason="typo")
    with pytest.raises(SeglabError, match="registered model 'acdc-nope' not found"):
        registry.set_alias(tracking, project, "acdc-nope", CHALLENGER, "1", reason="typo")

    uri = runs.configure(tracking, project)
    with registry.store_lock(uri):  # a promotion in progress: the alias must not move under it
        with pytest.raises(SeglabError, match="held this lock"):
            registry.set_alias(
                tracking, project, model, CHALLENGER, "1", reason="late", lock_timeout_s=0.2
            )
    assert str(client.get_registered_model(model).aliases[CHALLENGER]) == "2"

    decision = promote(model, tracking, project)  # the challenger is the candidate
    assert decision.outcome == "promoted" and decision.candidate.version == "2"
    assert {a: str(v) for a, v in client.get_registered_model(model).aliases.items()} == {
        CHAMPION: "2"
    }
