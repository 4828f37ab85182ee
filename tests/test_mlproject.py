"""The MLproject: every entry point is a valid `seglab` command, and `mlflow run` leaves one run."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.projects import _project_spec
from packaging.specifiers import SpecifierSet
from tests.helpers import git

from seglab.cli import build_parser
from seglab.config import TrackingParams
from seglab.tracking.registry import CHAMPION, PROMOTION_EXPERIMENT, evaluation_tags
from seglab.tracking.runs import ensure_experiment, log_metrics, tracked_run

ROOT = Path(__file__).resolve().parents[1]
# Stand-in values for parameters without a default, by MLflow parameter type (a float that is
# also a whole number, should a count be declared as one).
EXAMPLES = {"string": "acdc-nvae", "float": "3", "int": "3", "path": "params.yaml"}
SEGLAB = Path(sys.executable).parent / "seglab"  # the console script of this environment


def test_every_entry_point_is_a_seglab_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # path parameters must exist, relative to where mlflow run starts
    project = _project_spec.load_project(str(ROOT))
    expected = {
        "prepare_acdc",
        "prepare_lgg",
        "train_segmenter",
        "train_nvae",
        "train_corrector",
        "evaluate_correction",
        "correct",
        "search_nvae",
        "lgg_train",
        "lgg_compare",
        "promote",
        "promote_all",
    }
    assert expected <= set(project._entry_points)
    parser = build_parser()
    for name, entry in project._entry_points.items():
        values = {
            key: EXAMPLES[param.type]
            for key, param in entry.parameters.items()
            if param.default is None
        }
        command = shlex.split(entry.compute_command(values, storage_dir=None))
        assert command[0] == "seglab", name
        try:
            args = parser.parse_args(command[1:])
        except SystemExit as exc:
            pytest.fail(f"entry point {name}: `{shlex.join(command)}` does not parse ({exc})")
        assert callable(args.func)

    promote = project.get_entry_point("promote")
    command = promote.compute_command({"model": "acdc-nvae", "metric": "iou"}, storage_dir=None)
    args = parser.parse_args(shlex.split(command)[1:])  # undeclared -P values become options
    assert (args.model, args.metric, args.min_delta) == ("acdc-nvae", "iou", 0.0)


def subcommand(command: str) -> list[str]:
    """The words of an entry point's command that name the seglab subcommand: those before the
    first option or parameter placeholder."""
    words = shlex.split(command)[1:]
    end = next((i for i, w in enumerate(words) if w.startswith("-") or "{" in w), len(words))
    return words[:end]


def test_every_entry_point_names_a_seglab_subcommand() -> None:
    """`seglab <subcommand> --help` exits 0 for each entry point's command, as installed."""
    project = _project_spec.load_project(str(ROOT))
    for name, entry in project._entry_points.items():
        words = subcommand(entry.command)
        assert words, name
        done = subprocess.run(
            [str(SEGLAB), *words, "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"entry point {name}: {done.stderr}"
        assert done.stdout.startswith(f"usage: seglab {words[0]}"), name
    # ... and a subcommand that does not exist fails the same check
    done = subprocess.run([str(SEGLAB), "train", "nothing", "--help"], capture_output=True)
    assert done.returncode == 2


def test_typed_parameters_reach_the_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    project = _project_spec.load_project(str(ROOT))
    parser = build_parser()

    def parsed(entry: str, values: dict[str, str]) -> argparse.Namespace:
        command = project.get_entry_point(entry).compute_command(values, storage_dir=None)
        return parser.parse_args(shlex.split(command)[1:])

    args = parsed("search_nvae", {"n_trials": "27", "sampler": "grid"})
    assert (args.target, args.n_trials, args.sampler) == ("gt", 27, "grid")
    args = parsed("search_nvae", {})  # n_trials from the params file (search.n_trials)
    assert (args.target, args.n_trials, args.params) == ("gt", None, "params.yaml")
    args = parsed("correct", {"seg": "a.nii.gz", "image": "b.nii.gz", "out": "c.nii.gz"})
    assert (args.seg, args.image, args.out) == ("a.nii.gz", "b.nii.gz", "c.nii.gz")
    assert args.model == "models:/acdc-nvae-corrector@champion"
    args = parsed("train_corrector", {"variant": "context"})
    assert args.variant == "context" and args.params == "params.yaml"
    args = parsed("lgg_train", {"arch": "fpn-resnet18"})
    assert args.arch == "fpn-resnet18" and args.params == "pipelines/lgg/params.yaml"
    args = parsed("train_nvae", {"overlay": "search/best_nvae.yaml"})
    assert args.overlay == ["search/best_nvae.yaml"]


def test_mlflow_run_without_env_manager_builds_an_environment_with_seglab() -> None:
    """`mlflow run .` alone (MLflow's default env manager) gets an environment that has the
    `seglab` command: the project installed, on the Python pyproject requires."""
    project = _project_spec.load_project(str(ROOT))
    assert project.env_type == "python_env"
    env = yaml.safe_load(Path(project.env_config_path).read_text())
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{env['python']}.0")
    assert "-e ." in env["dependencies"]
    assert "pip" in env["build_dependencies"]


@pytest.mark.slow
def test_mlflow_run_promote_logs_into_the_launchers_run_only(tmp_path: Path) -> None:
    """`mlflow run -e promote` creates one run; the promotion records itself in it."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "MLproject", project / "MLproject")
    shutil.copy(ROOT / "python_env.yaml", project / "python_env.yaml")  # MLproject declares it
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (project / "params.yaml").write_text(f"tracking:\n  uri: {store}\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "init")

    tracking = TrackingParams(uri=store)
    with tracked_run(tracking, "acdc-nvae", "train", root=project) as trained:
        log_metrics({"dice_mean": 0.8, "anatomical_validity": 1.0})
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model("acdc-nvae")
    client.create_model_version(
        "acdc-nvae",
        f"{trained.info.artifact_uri}/model",
        run_id=trained.info.run_id,
        tags=evaluation_tags("test", "0123.dir"),
    )
    ensure_experiment(tracking, PROMOTION_EXPERIMENT, root=project)

    bin_dir = str(Path(sys.executable).parent)  # where the `seglab` console script lives
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "MLFLOW_TRACKING_URI": store,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_CEILING_DIRECTORIES": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(project), "-e", "promote",
         "-P", "model=acdc-nvae", "--experiment-name", PROMOTION_EXPERIMENT,
         "--env-manager", "local"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted version 1 to champion (was none)" in done.stdout

    experiments = [e.experiment_id for e in client.search_experiments()]
    launched = [r for r in client.search_runs(experiments) if r.info.run_id != trained.info.run_id]
    assert len(launched) == 1, [(r.info.run_name, r.data.tags) for r in launched]
    (run,) = launched
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["mlflow.project.entryPoint"] == "promote"
    assert tags["git.commit"] == git(project, "rev-parse", "HEAD")
    assert tags["git.dirty"] == "false"
    assert tags["params.sha256"] and tags["version.mlflow"]
    assert tags["promotion.acdc-nvae"] == "promoted v1"
    assert run.data.params["promote.model"] == "acdc-nvae"
    assert str(client.get_registered_model("acdc-nvae").aliases[CHAMPION]) == "1"
