"""`seglab train nvae --overlay FILE`: a search's best settings reach the NVAE stage, and its
MLflow run records which overlay (path and md5) the params were merged from."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from seglab.cli import main
from seglab.config import CardiacParams
from seglab.data.phantom.masks import heart_slices
from seglab.data.store import SliceSet, save_split
from seglab.stages import nvae as stage

SIZE = 64
PARAMS = {
    "profile": "quick",
    "acdc": {"prepared": "prepared", "prepare": {"size": SIZE}},
    "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
    "nvae": {
        "model": {
            "stem_channels": 2,
            "groups_per_scale": [1, 1, 1],
            "latent_channels": 4,
            "beta": [1, 1, 1],
            "kl_warmup_steps": 4,
        },
        "trainer": {"max_epochs": 1, "batch_size": 8, "accelerator": "cpu", "devices": 1},
        "samples": 4,
        "figure_rows": 2,
    },
}
# What `seglab search nvae` writes to search.best (comment header, then nvae.model).
BEST = "# The best NVAE settings of study s, trial 3.\nnvae:\n  model:\n    beta: [8, 10, 11]\n"


def project(root: Path, best: str = BEST) -> Path:
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (root / "search").mkdir()
    (root / "search/best_nvae.yaml").write_text(best)
    return root


def test_cli_overlay_reaches_the_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path, BEST)
    (root / "later.yaml").write_text("nvae:\n  model:\n    stem_channels: 8\n")
    seen: dict[str, Any] = {}

    def fake_train_nvae(params: CardiacParams, **kwargs: Any) -> dict[str, Any]:
        seen.update(params=params, **kwargs)
        return {}

    monkeypatch.setattr(stage, "train_nvae", fake_train_nvae)
    monkeypatch.chdir(root)
    argv = ["train", "nvae", "--params", "params.yaml", "--overlay", "search/best_nvae.yaml"]
    assert main([*argv, "--overlay", "later.yaml"]) == 0
    model = seen["params"].nvae.model
    assert model.beta == (8.0, 10.0, 11.0)  # from the search result
    assert model.stem_channels == 8  # from the second overlay, applied after the first
    assert model.latent_channels == 4  # params.yaml where no overlay says otherwise
    assert seen["overlays"] == [Path("search/best_nvae.yaml"), Path("later.yaml")]
    assert seen["params_file"] == Path("params.yaml")

    seen.clear()  # without --overlay: params.yaml as it is
    assert main(["train", "nvae", "--params", "params.yaml"]) == 0
    assert seen["params"].nvae.model.beta == (1.0, 1.0, 1.0) and seen["overlays"] == []


def test_cli_refuses_a_bad_overlay_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = project(tmp_path, "nvae:\n  model:\n    stem_chanels: 8\n")
    monkeypatch.setattr(stage, "train_nvae", lambda *a, **k: pytest.fail("must not train"))
    monkeypatch.chdir(root)
    argv = ["train", "nvae", "--params", "params.yaml", "--overlay"]
    assert main([*argv, "missing.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "seglab: error: missing.yaml: overlay not found"
    assert main([*argv, "search/best_nvae.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search/best_nvae.yaml: nvae.model.stem_chanels: Extra" in err[0]


def test_overlay_tags_name_each_file_and_its_md5(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "later.yaml").write_text("nvae: {}\n")
    paths = [Path("search/best_nvae.yaml"), Path("later.yaml")]
    md5 = [hashlib.md5((root / p).read_bytes()).hexdigest() for p in paths]
    assert stage.overlay_tags(paths, root) == {
        "params.overlay": "search/best_nvae.yaml,later.yaml",
        "params.overlay.md5": ",".join(md5),
    }
    assert stage.overlay_tags([], root) == {}


def hearts(n: int, seed: int) -> SliceSet:
    """A prepared split of ``n`` generated hearts, two patients."""
    return heart_slices(n, SIZE, seed)


@pytest.mark.slow
def test_train_nvae_with_the_search_result_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The DVC command of train_nvae: the registered model has the overlay's betas and its run
    names the overlay and its md5."""
    root = project(tmp_path)
    for split, (n, seed) in {"train": (16, 0), "val": (8, 1), "test": (8, 2)}.items():
        save_split(root / "prepared" / f"{split}.npz", hearts(n, seed))
    monkeypatch.chdir(root)
    argv = ["train", "nvae", "--params", "params.yaml", "--overlay", "search/best_nvae.yaml"]
    assert main(argv) == 0
    capsys.readouterr()

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'acdc-nvae'")
    assert version.tags["beta"] == "8,10,11" and version.tags["stem_channels"] == "2"
    run = client.get_run(version.run_id)
    assert run.info.run_name == "nvae-stem2-beta8-10-11"
    assert run.data.tags["params.overlay"] == "search/best_nvae.yaml"
    md5 = hashlib.md5((root / "search/best_nvae.yaml").read_bytes()).hexdigest()
    assert run.data.tags["params.overlay.md5"] == md5
    assert run.data.params["nvae.model.beta"] == "(8.0, 10.0, 11.0)"
