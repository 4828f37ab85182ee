"""`seglab search nvae` end to end on generated prepared slices: nested MLflow runs, the best
settings file, figures, registration as challenger, resume, and diverging trials."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from seglab.cli import main
from seglab.config import CardiacParams, NvaeParams, apply_profile, load_params
from seglab.data.phantom.masks import heart_slices
from seglab.data.store import SliceSet, save_split
from seglab.models.nvae import KLDivergenceError
from seglab.search.objective import CHECKPOINT_FILE_ATTR
from seglab.search.storage import open_storage
from seglab.stages.search import _clean, make_plan
from seglab.training import nvae_fit

SIZE = 64


def hearts(n: int, seed: int) -> SliceSet:
    """A prepared split of ``n`` generated hearts, two patients."""
    return heart_slices(n, SIZE, seed)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for split, (n, seed) in {"train": (16, 0), "val": (8, 1), "test": (8, 2)}.items():
        save_split(tmp_path / "prepared" / f"{split}.npz", hearts(n, seed))
    trainer = {"max_epochs": 1, "batch_size": 8, "accelerator": "cpu", "devices": 1}
    params = {
        "acdc": {"prepared": "prepared", "prepare": {"size": SIZE}},
        "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
        "nvae": {
            "model": {"stem_channels": 2, "groups_per_scale": [1, 1, 1], "latent_channels": 4},
            "trainer": trainer,
            "log_every_n_steps": 1,
            "samples": 8,
        },
        "search": {
            "n_trials": 2,
            "space": {"beta": {"low": 1, "high": 12}, "stem_channels": [2, 4]},
            "enqueue": {"gt": [{"beta": [8, 10, 11], "stem_channels": 2}]},
            "trainer": trainer,
            "heartbeat_interval": 5,
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def summary_of(project: Path, name: str = "metrics/search/nvae.json") -> dict[str, Any]:
    """The summary the stage wrote (stdout also carries MLflow's registration messages)."""
    return json.loads((project / name).read_text())


def runs_by_name(client: MlflowClient) -> dict[str, Any]:
    experiment = client.get_experiment_by_name("acdc-nvae-search")
    runs = client.search_runs([experiment.experiment_id])
    return {r.info.run_name: r for r in runs}


@pytest.mark.slow
def test_search_logs_nested_runs_writes_the_best_and_registers_a_challenger(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    assert main(["search", "nvae", "--params", "params.yaml"]) == 0
    summary = summary_of(project)
    name = summary["study"]
    assert name.startswith("acdc-nvae-gt-") and summary["finished"] == 2
    assert summary["states"] == {"COMPLETE": 2}
    assert summary["best"]["settings"]["stem_channels"] in (2, 4)
    assert summary["dashboard"] == "uv run optuna-dashboard sqlite:///optuna.db"

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = runs_by_name(client)
    parent = runs[f"study-{name}"]
    assert (
        parent.info.status == "FINISHED" and summary["mlflow_parent_run_id"] == parent.info.run_id
    )
    for number in (0, 1):
        trial = runs[f"trial-{number}"]
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.data.tags["optuna.trial"] == str(number)
        assert trial.data.params["trial.stem_channels"] in ("2", "4")
        assert 0.0 <= trial.data.metrics["dice_mean"] <= 1.0
        assert "anatomical_validity" in trial.data.metrics
        assert client.get_metric_history(trial.info.run_id, "val_dice_mean")  # per epoch
        assert client.get_metric_history(trial.info.run_id, "train_loss")  # per step
    assert runs["trial-0"].data.params["trial.beta_0"] == "8"  # the enqueued known best
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.png" in artifacts
    assert sorted(p.name for p in (project / "plots/search").iterdir()) == sorted(
        Path(a).name for a in artifacts
    )

    best = summary["best"]["number"]
    registered = summary["registered"]
    assert registered["trial"] == best and registered["alias"] == "challenger"
    version = client.get_model_version_by_alias("acdc-nvae", "challenger")
    assert str(version.version) == registered["version"]
    assert version.tags["optuna.trial"] == str(best) and version.tags["eval.split"] == "test"
    best_run = runs[f"best-trial-{best}"]
    assert version.run_id == best_run.info.run_id
    assert best_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert "dice_mean" in best_run.data.metrics and "sample_validity" in best_run.data.metrics

    # The best settings are an overlay of params.yaml that the NVAE params accept.
    overlay = yaml.safe_load((project / "search/best_nvae.yaml").read_text())
    assert overlay["nvae"]["model"] == summary["best"]["settings"]
    merged = apply_profile(
        {**yaml.safe_load((project / "params.yaml").read_text()), "profile": "quick"}
    )
    merged["nvae"]["model"].update(overlay["nvae"]["model"])
    assert CardiacParams.model_validate(merged).nvae.model.stem_channels in (2, 4)
    kept = list((project / "data/work/search" / name).glob("trial-*"))
    assert len(kept) == 1  # only the best trial's checkpoint folder stays
    assert sorted(f.name for f in kept[0].iterdir()) == ["best.ckpt"]  # finished: no resume

    # Resumed: the budget is finished, nothing trains; the report is a child of the same parent
    # and the same best is not registered twice.
    assert main(["search", "nvae", "--params", "params.yaml"]) == 0
    again = summary_of(project)
    assert again["finished"] == 2 and again["registered"]["version"] == registered["version"]
    runs = runs_by_name(client)
    assert runs[f"session-{name}"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert len(client.search_model_versions("name = 'acdc-nvae'")) == 1

    # A bigger budget continues the same study under the same parent.
    assert main(["search", "nvae", "--params", "params.yaml", "--n-trials", "3"]) == 0
    assert summary_of(project)["finished"] == 3
    assert runs_by_name(client)["trial-2"].data.tags["mlflow.parentRunId"] == parent.info.run_id


@pytest.mark.slow
def test_diverging_trials_are_pruned_and_the_search_still_reports(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def diverge(*args: object, **kwargs: object) -> None:
        raise KLDivergenceError(5, {"loss": float("nan"), "kl_scale_0": float("inf")})

    monkeypatch.setattr(nvae_fit, "train_nvae_model", diverge)
    monkeypatch.chdir(project)
    argv = ["search", "nvae", "--params", "params.yaml", "--storage", "s.journal"]
    assert main([*argv, "--multi-objective", "--study-name", "blowup"]) == 0
    summary = summary_of(project)
    assert summary["states"] == {"PRUNED": 2} and summary["best"] is None
    assert summary["registered"] is None and summary["pareto_front"] == []
    assert all("diverged at step 5" in p["reason"] for p in summary["pruned"])

    study = optuna.load_study(
        study_name="blowup", storage=open_storage("s.journal", project, heartbeat_interval=5)
    )
    assert {t.user_attrs["stopped"] for t in study.trials} == {"diverged"}
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = runs_by_name(client)
    for number in (0, 1):
        run = runs[f"trial-{number}"]
        assert run.info.status == "FAILED"
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"divergence.json", "trial.json"} <= names
    overlay = yaml.safe_load((project / "search/best_nvae.yaml").read_text())
    assert overlay == {"nvae": {"model": {}}}
    assert NvaeParams.model_validate(overlay["nvae"]["model"]) == NvaeParams()


def test_a_missing_dataset_is_one_line(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    assert main(["search", "nvae", "--params", "params.yaml", "--target", "context"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seglab: error: data/acdc3gram:") and "\n" not in err
    params = load_params(project / "params.yaml", CardiacParams)
    assert params.search.target == "gt"

    save_split(project / "prepared" / "val.npz", hearts(0, 1))
    assert main(["search", "nvae", "--params", "params.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("prepared: the val split has no slices") and "\n" not in err
    assert not (project / "optuna.db").exists()  # refused before any study or run existed


def test_study_name_ignores_speed_settings_and_follows_what_a_trial_measures(
    project: Path,
) -> None:
    """Workers that differ only in speed settings (threads, channels-last, compile) share one
    study; a different trial budget or per-trial NVAE override is a different study."""
    params = load_params(project / "params.yaml", CardiacParams)

    def name(trainer: dict[str, Any], model: dict[str, Any] | None = None) -> str:
        search = params.search.model_copy(
            update={
                "trainer": params.search.trainer.model_copy(update=trainer),
                "model": model or {},
            }
        )
        plan = make_plan(params.model_copy(update={"search": search}), search, project, None)
        return plan.study_name

    plain = name({})
    assert name({"threads": 1, "channels_last": True, "compile": True}) == plain
    assert name({"limit_train_batches": 2}) != plain
    assert name({}, {"kl_warmup_steps": 7}) != plain


@pytest.mark.parametrize("kept", ["best.ckpt", "last.ckpt"])
def test_a_finished_search_keeps_only_the_best_trials_kept_checkpoint(
    tmp_path: Path, kept: str
) -> None:
    """``trainer.keep: last`` registers the best trial's ``last.ckpt``: cleaning must keep it."""
    for trial in ("trial-0", "trial-1"):
        (tmp_path / trial).mkdir()
        for name in ("best.ckpt", "last.ckpt"):
            (tmp_path / trial / name).write_bytes(b"weights")
    best = optuna.trial.create_trial(
        value=0.9, user_attrs={CHECKPOINT_FILE_ATTR: str(tmp_path / "trial-1" / kept)}
    )
    _clean(SimpleNamespace(work=tmp_path), best)  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["trial-1"]
    assert [p.name for p in (tmp_path / "trial-1").iterdir()] == [kept]
