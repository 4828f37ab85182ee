"""Smoke tests of the benchmark scripts: they run end to end with tiny settings on the CPU, print
a table with the expected rows and positive figures, and write parseable JSON.

The scripts live in ``benchmarks/`` (not a package): they are imported by name with that folder
first on ``sys.path``, as ``python benchmarks/<script>.py`` runs them.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from seglab.config import BrainParams, CardiacParams
from seglab.data.store import SliceSet, save_split

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
SIZE = 32  # the smallest image the NVAE's 3 pre-processing blocks and 3 scales take

TINY_CARDIAC = {
    "acdc": {"prepare": {"size": SIZE}},
    "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
    "segmenters": {
        "nets": {
            "unet": {"channels": [4, 8, 16]},
            "resunet": {"channels": [4, 8, 16]},
            "attunet": {"channels": [4, 8, 16]},
            "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
        }
    },
    "nvae": {
        "model": {
            "stem_channels": 2,
            "groups_per_scale": [1, 1, 1],
            "latent_channels": 4,
            "beta": [1.0, 1.0, 1.0],
            "kl_warmup_steps": 2,
        },
        "trainer": {"max_epochs": 1, "batch_size": 4},
    },
    "profiles": {"full": {"segmenters": {"nets": {"unet": {"channels": [8, 16, 32, 64]}}}}},
}
TINY_BRAIN = {
    "lgg": {"prepare": {"size": SIZE}},
    "architectures": {"names": ["unet-resnet18"]},
}


@pytest.fixture(scope="module")
def scripts() -> Iterator[dict[str, ModuleType]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        yield {name: importlib.import_module(name) for name in ("bench_models", "bench_data")}


def _script(name: str) -> ModuleType:
    """One benchmark script as a module (its folder first on the path, as when it is run)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        return importlib.import_module(name)


@pytest.fixture
def params(tmp_path: Path) -> list[str]:
    """``--params``/``--brain-params`` options naming tiny params files in ``tmp_path``."""
    cardiac, brain = tmp_path / "params.yaml", tmp_path / "brain.yaml"
    cardiac.write_text(yaml.safe_dump(TINY_CARDIAC))
    brain.write_text(yaml.safe_dump(TINY_BRAIN))
    return ["--params", str(cardiac), "--brain-params", str(brain), "--device", "cpu"]


def slice_set(n: int, lgg: bool = False, seed: int = 0) -> SliceSet:
    """A prepared split of ``n`` heart-like slices (ACDC layout) or 3-channel uint8 images with
    binary masks (LGG layout)."""
    common = sys.modules["common"]
    label = common.heart_masks(n, SIZE, seed).numpy()
    meta = pd.DataFrame(
        {
            "patient": [f"patient{i // 4:03d}" for i in range(n)],
            "group": "NOR",
            "phase": "ED",
            "frame": np.ones(n, np.int16),
            "slice_index": np.arange(n, dtype=np.int16) % 4,
            "slice_count": np.full(n, 4, np.int16),
            "spacing_x": np.full(n, 200.0 / SIZE, np.float32),
            "spacing_y": np.full(n, 200.0 / SIZE, np.float32),
            "thickness": np.full(n, 10.0, np.float32),
        }
    )
    if lgg:
        image = np.repeat((label[:, None] * 80).astype(np.uint8), 3, axis=1)
        return SliceSet(image=image, label=(label == 3).astype(np.uint8), meta=meta)
    return SliceSet(image=label.astype(np.float32) / 3, label=label, meta=meta)


def prepared(folder: Path, lgg: bool = False) -> Path:
    for k, (split, n) in enumerate({"train": 12, "val": 8, "test": 4}.items()):
        save_split(folder / f"{split}.npz", slice_set(n, lgg, seed=k))
    return folder


def one_epoch_argv(tmp_path: Path, folder: Path, out: Path) -> list[str]:
    """``--params`` (``TINY_CARDIAC``, one epoch per training), ``--prepared`` and ``--out`` of
    a training script on prepared slices (``common.prepared_acdc_parser``)."""
    params = tmp_path / "params.yaml"
    tiny = TINY_CARDIAC | {
        "segmenters": TINY_CARDIAC["segmenters"] | {"train": {"trainer": {"max_epochs": 1}}}
    }
    params.write_text(yaml.safe_dump(tiny))
    out.parent.mkdir(parents=True, exist_ok=True)
    return ["--params", str(params), "--prepared", str(folder), "--out", str(out)]


def table_rows(text: str, title: str) -> dict[str, list[str]]:
    """First cell -> cells of every body row of the markdown table under ``### title``."""
    section = text.split(f"### {title}\n", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")][2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {row[0]: row[1:] for row in cells}


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_models_table_and_json(
    scripts: dict[str, ModuleType],
    params: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out" / "models.json"
    argv = ["--models", "unet", "nvae-stem4", "nvae-context", "lgg-unet-resnet18"]
    argv += ["--steps", "1", "--warmup", "0", "--batch-size", "2", "--json", str(out), *params]
    scripts["bench_models"].main(argv)
    text = capsys.readouterr().out
    assert "- hardware: " in text and "torch threads" in text and "- settings: " in text
    rows = table_rows(text, "throughput")
    assert list(rows) == ["unet", "nvae-stem4", "nvae-context", "lgg-unet-resnet18"]
    assert rows["unet"][0] == f"1x{SIZE}x{SIZE}"
    assert rows["nvae-context"][0] == f"12x{SIZE}x{SIZE}"
    assert rows["lgg-unet-resnet18"][0] == f"3x{SIZE}x{SIZE}"
    for cells in rows.values():
        # params, MB, train slices/s, ms/step, infer slices/s: all positive figures
        assert all(number(cell) > 0 for cell in cells[1:6]), cells

    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "models"
    assert payload["settings"]["batch_size"] == 2 and payload["settings"]["device"] == "cpu"
    assert payload["environment"]["torch_threads"] >= 1 and payload["environment"]["cpu"]
    by_name = {row["model"]: row for row in payload["throughput"]}
    assert by_name["unet"]["params_count"] < by_name["nvae-stem4"]["params_count"]
    for row in by_name.values():
        assert row["train_slices_per_s"] > 0 and row["infer_slices_per_s"] > 0
        assert row["host_peak_mb"] >= 0


def test_full_sizes_come_from_the_profile(scripts: dict[str, ModuleType]) -> None:
    """--sizes reads the project's params.yaml at its top level or with profiles.full."""
    common = sys.modules["common"]
    quick = common.params_at(ROOT / "params.yaml", CardiacParams, "quick")
    full = common.params_at(ROOT / "params.yaml", CardiacParams, "full")
    assert quick.segmenters.nets.unet.channels[0] < full.segmenters.nets.unet.channels[0]
    assert full.segmenters.nets.unet.channels == (64, 128, 256, 512, 1024)
    brain = common.params_at(ROOT / "pipelines/lgg/params.yaml", BrainParams, "full")
    assert brain.lgg.prepare.size == 256
    specs = scripts["bench_models"].model_specs(full, brain)
    assert {"unet", "swinunetr", "nvae-stem64", "nvae-context", "lgg-unet-resnet101"} <= set(specs)


def test_segmenters_get_the_inputs_their_profile_gives_them(
    scripts: dict[str, ModuleType],
) -> None:
    """At the cpu profile's sizes a segmenter sees its neighbours (and the ResUNet and UNet
    their place in the stack): the benchmark's batch has the channels the network takes."""
    common = sys.modules["common"]
    cpu = common.params_at(ROOT / "params.yaml", CardiacParams, "cpu")
    brain = common.params_at(ROOT / "pipelines/lgg/params.yaml", BrainParams, "cpu")
    specs = scripts["bench_models"].model_specs(cpu, brain)
    for arch, channels in {"unet": 4, "attunet": 3}.items():
        images, labels = specs[arch].batch(2)
        assert images.shape[1] == channels and labels.shape[0] == 2
        module = specs[arch].build()
        assert module.net(images[:, :, :64, :64]).shape[:2] == (2, 4)


def test_unknown_model_is_one_line(
    scripts: dict[str, ModuleType], params: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        scripts["bench_models"].main(["--models", "unet", "vnet", *params])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model(s) vnet (known: unet, ") and "\n" not in err


def test_time_to_dice(
    scripts: dict[str, ModuleType],
    params: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = prepared(tmp_path / "acdc")
    argv = ["--time-to-dice", "0.0", "--data", str(data), "--max-epochs", "2", *params]
    argv.append("--channels-last")  # reaches the trainer as a stage's params would
    payload = scripts["bench_models"].main([*argv, "--json", str(tmp_path / "ttd.json")])
    text = capsys.readouterr().out
    summary = payload["time to Dice"][0]
    assert summary["reached"] and summary["epochs_to_target"] == 1 and summary["epochs"] == 1
    assert summary["seconds_to_target"] > 0 and summary["train_slices_per_s"] > 0
    assert payload["settings"]["train_slices"] == 12 and payload["settings"]["batch_size"] == 4
    assert payload["settings"]["channels_last"] is True
    assert list(table_rows(text, "epochs")) == ["1"]
    assert json.loads((tmp_path / "ttd.json").read_text())["epochs"][0]["epoch"] == 1


def test_data_pipelines_against_models(
    scripts: dict[str, ModuleType],
    params: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = prepared(tmp_path / "acdc")
    out = tmp_path / "data.json"
    argv = ["--data", str(data), "--models", "unet", "--batch-size", "4", "--epochs", "1"]
    scripts["bench_data"].main([*argv, "--steps", "1", "--warmup", "0", "--json", str(out)])
    text = capsys.readouterr().out
    assert list(table_rows(text, "loading")) == ["train", "val", "test"]
    assert table_rows(text, "loading")["train"][0] == "12"
    rows = table_rows(text, "pipelines")
    assert list(rows) == [
        "segmenter: loader -> device",
        "segmenter: loader -> device + augment",
        "segmenter: resident + augment",
        "nvae: loader (one-hot, as the stage) -> device",
        "nvae: loader (labels) -> device + one-hot",
        "nvae: resident labels + one-hot",
    ]
    assert all(number(cells[0]) > 0 for cells in rows.values())
    payload = json.loads(out.read_text())
    by_name = {row["pipeline"]: row for row in payload["pipelines"]}
    segmenter = by_name["segmenter: loader -> device"]
    assert segmenter["slices"] == 12 and segmenter["model"] == "unet"
    assert 0 < segmenter["data_share"] < 100 and segmenter["bound"] in ("data", "model")
    # one-hot float32 holds 4 channels of 4 bytes where the labels hold one byte
    onehot = by_name["nvae: loader (one-hot, as the stage) -> device"]
    labels = by_name["nvae: loader (labels) -> device + one-hot"]
    assert onehot["tensors_mb"] == pytest.approx(16 * labels["tensors_mb"])
    assert "model" not in onehot  # no NVAE was measured
    assert [m["model"] for m in payload["models"]] == ["unet"]


def test_data_on_a_brain_folder(
    scripts: dict[str, ModuleType],
    params: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = prepared(tmp_path / "lgg", lgg=True)
    argv = ["--data", str(data), "--models", "--epochs", "1", *params]
    payload = scripts["bench_data"].main(argv)
    rows = {row["pipeline"]: row for row in payload["pipelines"]}
    # the brain params leave augmentation off: no augmented rows, no NVAE rows
    assert list(rows) == ["lgg: loader -> device", "lgg: resident"]
    assert rows["lgg: loader -> device"]["tensors_mb"] == pytest.approx(
        12 * (3 * SIZE * SIZE * 4 + SIZE * SIZE) / 2**20
    )
    assert payload["models"] == []


def test_missing_data_is_one_line(
    scripts: dict[str, ModuleType],
    params: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        scripts["bench_data"].main(["--data", str(tmp_path / "nowhere"), *params])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path / 'nowhere' / 'train.npz'}: prepared split not found " + (
        "(run `dvc repro` to build it)"
    )


def test_mlflow_run(
    scripts: dict[str, ModuleType],
    params: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--models", "unet", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--mlflow"]
    scripts["bench_models"].main([*argv, *params])
    assert "logged to MLflow experiment 'benchmarks'" in capsys.readouterr().out
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("benchmarks")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "models-cpu" and run.info.status == "FINISHED"
    assert run.data.metrics["unet.train_slices_per_s"] > 0
    assert run.data.params["settings.batch_size"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"models.json", "models.md"}


def test_table_and_metric_keys(scripts: dict[str, ModuleType]) -> None:
    common = sys.modules["common"]
    rows = [{"name": "a: b(c)", "x": 1.5, "ok": True, "n": None}, {"name": "e", "x": 1234.0}]
    table = common.markdown_table(rows, {"name": "name", "x": "x", "ok": "ok", "n": "n"})
    assert table.splitlines() == [
        "| name | x | ok | n |",
        "|---|---|---|---|",
        "| a: b(c) | 1.5 | yes | - |",
        "| e | 1,234 | - | - |",
    ]
    assert common.row_metrics(rows, "name") == {"a_ b_c_.x": 1.5, "e.x": 1234.0}
    masks = common.heart_masks(16, SIZE)
    assert masks.shape == (16, SIZE, SIZE) and set(masks.unique().tolist()) == {0, 1, 2, 3}


def test_time_to_dice_reads_the_stages_curves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ttd = _script("time_to_dice")
    seconds = [10.0, 20.0, 60.0, 70.0]  # the third epoch ran on a busy machine
    fast = pd.DataFrame(
        {"epoch": range(4), "seconds": seconds, "val_dice_mean": [0.5, 0.86, 0.89, 0.88]}
    )
    slow = fast.assign(val_dice_mean=[0.3, 0.4, 0.5, 0.6])
    fast.to_csv(tmp_path / "unet.curves.csv", index=False)
    slow.to_csv(tmp_path / "slow.csv", index=False)
    out, figures = tmp_path / "ttd.png", tmp_path / "ttd.json"
    rows = ttd.main(
        [
            str(tmp_path / "unet.curves.csv"),
            f"old={tmp_path / 'slow.csv'}",
            "--targets",
            "0.85",
            "0.9",
            "--out",
            str(out),
            "--json",
            str(figures),
        ]  # fmt: skip
    )
    assert set(rows) == {"unet", "old"} and out.stat().st_size > 0
    unet = rows["unet"]
    assert unet["best_val_dice"] == 0.89 and unet["best_epoch"] == 3 and unet["best_seconds"] == 60
    assert unet["seconds_to_0.85"] == 20.0 and np.isnan(unet["seconds_to_0.9"])
    assert unet["quiet_seconds_per_epoch"] == 10.0 and unet["quiet_total_seconds"] == 40.0
    table = capsys.readouterr().out
    assert "| unet | 4 |" in table and "| old | 4 |" in table
    assert json.loads(figures.read_text())["unet"]["best_epoch"] == 3
    by_epoch = ttd.figure(ttd.read_runs([str(tmp_path / "slow.csv")]), [0.85], x="epoch")
    assert by_epoch.axes[0].get_xlabel() == "epoch"
    assert list(by_epoch.axes[0].lines[0].get_xdata()) == [1, 2, 3, 4]
    (tmp_path / "bad.csv").write_text("epoch,loss\n0,1\n")
    with pytest.raises(SystemExit, match="not a curves file"):
        ttd.main([str(tmp_path / "bad.csv")])


def test_lgg_curves_compares_runs_network_by_network(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    curves = _script("lgg_curves")
    for run, ious in {
        "old": [0.2, 0.5, 0.3, 0.3, 0.3, 0.3],
        "new": [0.1, 0.3, 0.4, 0.5, 0.5, 0.6],
    }.items():
        for name in ("unet-resnet18", "fpn-resnet18"):
            (tmp_path / run).mkdir(exist_ok=True)
            frame = pd.DataFrame({"epoch": range(6), "seconds": np.arange(1, 7) * 60.0})
            frame.assign(val_iou=ious).to_csv(tmp_path / run / f"{name}.curves.csv", index=False)
    out = tmp_path / "curves.png"
    rows = curves.main([f"old={tmp_path / 'old'}", f"new={tmp_path / 'new'}", "--out", str(out)])
    unet_old, unet_new = rows[2], rows[3]  # networks in name order, runs in the given order
    assert (unet_old["network"], unet_old["run"], unet_new["run"]) == (
        "unet-resnet18",
        "old",
        "new",
    )
    assert unet_old["best_val_iou"] == 0.5 and unet_old["best_epoch"] == 2
    assert unet_old["last5_val_iou"] == pytest.approx(0.34)
    assert unet_new["best_val_iou"] == 0.6 and unet_new["best_epoch"] == 6
    assert rows[-1] == {
        "network": "mean",
        "run": "new",
        "best_val_iou": 0.6,
        "last5_val_iou": pytest.approx(0.46),
    }
    assert out.stat().st_size > 0 and "| unet-resnet18 | new | 6 |" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    frame.assign(val_iou=0.1).to_csv(tmp_path / "other/linknet-resnet18.curves.csv", index=False)
    with pytest.raises(SystemExit, match="different networks"):
        curves.main([f"old={tmp_path / 'old'}", f"x={tmp_path / 'other'}"])
    with pytest.raises(SystemExit, match="no \\*.curves.csv files"):
        curves.main([f"empty={tmp_path / 'empty'}"])
