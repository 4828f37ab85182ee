"""The real-data report scripts on tiny stand-ins: ``inference_choices.py`` chooses on the
validation split only and scores every network and their ensemble; ``summarize_real_acdc.py
--keep`` keeps what a run lacks; both summaries name the code that trained each row."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from tests.benchmarks.test_benchmarks import BENCHMARKS, prepared
from tests.helpers import TINY

from seglab.config import BrainParams, CardiacParams, SegmentersParams, SegmenterTrainParams
from seglab.evaluation.gate_choice import THRESHOLDS, candidates
from seglab.stages.lgg import LGG_EXPERIMENT
from seglab.stages.segmenters import EXPERIMENT
from seglab.tracking import lineage, runs
from seglab.tracking.runs import tracked_run
from seglab.training.segmenters import new_module


@pytest.fixture(scope="module")
def scripts() -> Iterator[dict[str, ModuleType]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        names = (
            "common",
            "gate_choices",
            "inference_choices",
            "summarize_real_acdc",
            "summarize_real_lgg",
        )
        yield {name: importlib.import_module(name) for name in names}


def _checkpoint(path: Path, arch: str, seed: int) -> Path:
    torch.manual_seed(seed)
    train = SegmenterTrainParams(context_slices=1)
    module = new_module(arch, SegmentersParams(nets=TINY, train=train))
    payload = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save(payload | {"pytorch-lightning_version": "2.6.6"}, path)
    return path


def test_inference_choices_choose_on_validation_and_score_the_ensemble(
    scripts: dict[str, ModuleType], tmp_path: Path
) -> None:
    folder = prepared(tmp_path / "prepared")
    ckpts = [_checkpoint(tmp_path / f"{a}.ckpt", a, k) for k, a in enumerate(("unet", "attunet"))]
    out = tmp_path / "choices.json"
    argv = [*map(str, ckpts), "--prepared", str(folder), "--threads", "1", "--json", str(out)]
    results = scripts["inference_choices"].main(argv)
    assert json.loads(out.read_text()) == results
    assert set(results) == {"unet", "attunet", "ensemble"}
    for name, row in results.items():
        scores = row["val_dice_mean"]
        assert len(scores) == 2 * (1 + len(scripts["inference_choices"].FRACTIONS))
        assert scores[row["chosen_on_val"]] == max(scores.values())  # validation decides
        assert 0.0 <= row["test_dice_mean"] <= 1.0 and "test_dice3d_mean" in row
        assert ("stored" in row) == (name != "ensemble")


def test_drop_relative_removes_a_structure_where_it_is_small_against_its_volume(
    scripts: dict[str, ModuleType],
) -> None:
    pred = np.zeros((3, 8, 8), np.uint8)
    pred[0, :6, :6] = pred[1, :5, :5] = 1  # 36 and 25 pixels
    pred[2, :2, :2] = 1  # 4 pixels: 11 % of the largest
    out = scripts["inference_choices"].drop_relative(pred, [np.array([0, 1, 2])], 0.2)
    assert out[2].max() == 0 and (out[:2] == pred[:2]).all()


def test_keep_takes_what_the_run_lacks_from_the_earlier_summary(
    scripts: dict[str, ModuleType],
) -> None:
    keep = scripts["summarize_real_acdc"].keep_missing
    earlier = {
        "segmenters": {"unet": {"dice_mean": 0.8}, "swinunetr": {"dice_mean": 0.7}},
        "nvae": {"dice_mean": 0.9},
        "correctors": {"context": {"dice_mean": 0.81}},
        "correction": {"rows": 1},
        "correction_inputs_commit": "abc",
    }
    run = {"segmenters": {"unet": {"dice_mean": 0.84}}, "nvae": None, "correctors": {}}
    kept = keep(run, earlier)
    assert kept["commit"] == "unknown"
    assert keep({**run, "commit": "unknown"}, {**earlier, "commit": "c0ffee"})["commit"] == "c0ffee"
    assert keep({**run, "commit": "beef"}, {**earlier, "commit": "c0ffee"})["commit"] == "beef"
    assert kept["segmenters"] == {"unet": {"dice_mean": 0.84}, "swinunetr": {"dice_mean": 0.7}}
    assert kept["correctors"] == earlier["correctors"] and kept["correction_inputs_commit"] == "abc"
    newer = {**run, "correctors": {"context": {"dice_mean": 0.83}}, "nvae": {"dice_mean": 0.91}}
    assert keep(newer, earlier)["correctors"] == newer["correctors"]  # the run's own win
    assert keep(newer, earlier)["nvae"] == newer["nvae"]


def test_gate_choices_choose_from_validation_figures_alone(
    scripts: dict[str, ModuleType],
) -> None:
    module = scripts["gate_choices"]
    names = [g.name for g in candidates()]
    assert "validity" in names and "validity_or_plausibility_below_0.8" in names
    assert len(names) == 2 * len(THRESHOLDS) + 2  # "nothing" (every input kept) included
    val = {n: {"dice_mean": 0.80, "anatomical_validity": 0.90} for n in names}
    val["input"] = val["nothing"] = {"dice_mean": 0.85, "anatomical_validity": 0.80}
    val["validity"] = {"dice_mean": 0.849, "anatomical_validity": 0.95}
    val["plausibility_below_0.9"] = {"dice_mean": 0.86, "anatomical_validity": 0.85}
    chosen = module.choose(val, 0.002)
    assert chosen == {"best_dice": "plausibility_below_0.9", "most_valid_within": "validity"}


@pytest.fixture
def outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder outside any git repository, its runs in its own store."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runs, "_launched", None)
    return tmp_path


def test_a_row_names_the_code_that_trained_it_even_outside_git(
    scripts: dict[str, ModuleType], outside_git: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project folder outside git: the row's commit is the ``seglab.git.commit`` the final
    training run logged, not the folder's (there is none)."""
    params = CardiacParams()
    trained_at = scripts["summarize_real_acdc"]._trained_at
    assert trained_at(outside_git, params, "unet") == "unknown"  # no store, no git
    assert not (outside_git / "mlflow.db").exists()  # and none created
    code = {"seglab.git.commit": "c0de" * 10, "seglab.git.dirty": "true"}
    later = {"seglab.git.commit": "0" * 40, "seglab.git.dirty": "false"}
    for arch, role, tags in (
        ("unet", "final", code),
        ("unet", "crossfit", later),
        ("resunet", "final", later),
    ):
        monkeypatch.setattr(lineage, "code_tags", lambda *_, tags=tags, **__: tags)
        with tracked_run(
            params.tracking, EXPERIMENT, arch, root=outside_git, tags={"arch": arch, "role": role}
        ):
            pass
    assert trained_at(outside_git, params, "unet") == "c0de" * 10 + "+dirty"  # its final run's
    assert trained_at(outside_git, params, "resunet") == "0" * 40


def test_an_lgg_row_names_the_code_that_trained_that_network(
    scripts: dict[str, ModuleType], outside_git: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = BrainParams()
    trained_at = scripts["summarize_real_lgg"]._trained_at
    assert trained_at(outside_git, params, "unet-resnet18") == "unknown"
    for decoder, encoder, commit in (("unet", "resnet18", "a"), ("unet", "resnet101", "b")):
        code = {"seglab.git.commit": commit * 40, "seglab.git.dirty": "false"}
        monkeypatch.setattr(lineage, "code_tags", lambda *_, code=code, **__: code)
        tags = {"arch": decoder, "encoder": encoder}
        with tracked_run(params.tracking, LGG_EXPERIMENT, "x", root=outside_git, tags=tags):
            pass
    assert trained_at(outside_git, params, "unet-resnet18") == "a" * 40
    assert trained_at(outside_git, params, "unet-resnet101") == "b" * 40
    assert trained_at(outside_git, params, "fpn-resnet18") == "unknown"


def test_an_lgg_row_reads_the_last_epochs_validation_iou(
    scripts: dict[str, ModuleType], tmp_path: Path
) -> None:
    last_val_iou = scripts["summarize_real_lgg"]._last_val_iou
    assert last_val_iou(tmp_path / "missing.curves.csv") is None  # runs before curves files
    curves = tmp_path / "net.curves.csv"
    curves.write_text("epoch,seconds,val_iou\n0,1.0,0.2\n1,2.0,0.5\n2,3.0,0.4\n")
    assert last_val_iou(curves) == pytest.approx(0.4)
