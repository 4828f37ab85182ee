"""The corrector stage and the correction report stage, end to end on generated ACDCSeg rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from seglab.cli import main
from seglab.config import CardiacParams, GateParams, NvaeParams, load_params
from seglab.data.acdcseg import acdcseg_rows, trigram_rows
from seglab.data.labels import LV, RV
from seglab.data.phantom.masks import heart_masks
from seglab.data.store import SliceSet, concat, load_split, save_split
from seglab.errors import ConfigError, DataError
from seglab.evaluation.gate_choice import choose_gate
from seglab.inference.correct import load_corrector
from seglab.stages import correctors
from seglab.stages.artifacts import load_predictions
from seglab.stages.correction_report import provenance
from seglab.stages.correctors import train_corrector
from seglab.training.nvae_fit import NvaeFit
from seglab.training.nvae_module import NvaeModule
from seglab.variants import CORRECTORS, NvaeVariant

SIZE = 32
ARCHS = ("unet", "attunet")


def hearts(n: int, seed: int) -> np.ndarray:
    """uint8 [n, SIZE, SIZE]: an LV disc in a MYO ring, an RV crescent beside it."""
    return heart_masks(n, SIZE, seed)


def prepared(patients: int, seed: int) -> SliceSet:
    """ED and ES volumes of 4 slices per patient."""
    rows = [
        (f"patient{seed}{p:02d}", group, phase, frame, z)
        for p, group in zip(range(patients), ("NOR", "DCM", "HCM", "MINF", "RV"), strict=False)
        for phase, frame in (("ED", 1), ("ES", 9))
        for z in range(4)
    ]
    n = len(rows)
    meta = pd.DataFrame(rows, columns=["patient", "group", "phase", "frame", "slice_index"])
    meta = meta.assign(
        slice_count=np.int16(4),
        spacing_x=np.float32(200 / SIZE),
        spacing_y=np.float32(200 / SIZE),
        thickness=np.float32(10.0),
    )
    meta["frame"] = meta["frame"].astype(np.int16)
    meta["slice_index"] = meta["slice_index"].astype(np.int16)
    label = hearts(n, seed)
    return SliceSet(image=label.astype(np.float32) / 3, label=label, meta=meta)


def damaged(label: np.ndarray, seed: int) -> np.ndarray:
    """A segmenter's mistakes: the RV dropped on some slices, a stray LV blob on others."""
    rng = np.random.default_rng(seed)
    out = label.copy()
    for i in range(len(out)):
        if rng.random() < 0.5:
            out[i][out[i] == RV] = 0
        else:
            out[i][2:6, 2:6] = LV
    return out


def tiny_model(in_channels: int, beta: list[float]) -> dict[str, object]:
    return {
        "in_channels": in_channels,
        "stem_channels": 2,
        "preprocess_blocks": 1,
        "groups_per_scale": [1, 1],
        "latent_channels": 2,
        "beta": beta,
        "kl_warmup_steps": 2,
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ACDCSeg + 3-gram splits of two 'segmenters', a tiny NVAE of ground-truth masks, params."""
    root = tmp_path_factory.mktemp("corrector-project")
    for split, (patients, seed) in {"train": (3, 0), "val": (2, 1), "test": (2, 2)}.items():
        base = prepared(patients, seed)
        rows = concat(
            [acdcseg_rows(base, damaged(base.label, seed + 10 * k), a) for k, a in enumerate(ARCHS)]
        )
        save_split(root / "acdcseg" / f"{split}.npz", rows)
        save_split(root / "acdc3gram" / f"{split}.npz", trigram_rows(rows))
    trainer = {"max_epochs": 2, "batch_size": 8, "accelerator": "cpu", "devices": 1}
    gt_model = tiny_model(4, [1.0, 1.0])
    module = NvaeModule(NvaeParams(**gt_model), SIZE)
    (root / "nvae").mkdir()
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        root / "nvae" / "nvae.ckpt",
    )
    params = {
        "acdc": {"prepared": "prepared", "prepare": {"size": SIZE}},
        "tracking": {"uri": "sqlite:///mlflow.db", "artifacts": "mlartifacts"},
        "acdcseg": {"out": "acdcseg", "trigram": "acdc3gram"},
        "nvae": {"model": gt_model, "models": "nvae"},
        "correctors": {
            "nvae": {"model": tiny_model(4, [1.0, 1.0]), "trainer": trainer},
            "context": {"model": tiny_model(12, [1.0, 5.0]), "trainer": trainer},
            "log_every_n_steps": 1,
            "figure_rows": 2,
        },
        "correction": {"gallery": 2},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["nvae", "context"])
def test_corrector_trains_corrects_gates_logs_and_registers(project: Path, variant: str) -> None:
    params = load_params(project / "params.yaml", CardiacParams)
    result = train_corrector(params, variant, root=project)  # type: ignore[arg-type]

    for key in ("dice_mean", "gated_dice_mean", "input_dice_mean", "anatomical_validity"):
        assert 0.0 <= result[key] <= 1.0, key
    test = load_split(project / "acdcseg" / "test.npz")
    arrays = load_predictions(project / "data/corrections" / f"{variant}.npz", test)
    n = len(test)
    assert arrays["after"].shape == arrays["gated"].shape == test.label.shape
    assert arrays["plausibility"].shape == arrays["agreement"].shape == (n,)
    # Gated rows are the corrector's where taken, the segmenter's elsewhere.
    taken = arrays["taken"]
    np.testing.assert_array_equal(arrays["gated"][taken], arrays["after"][taken])
    np.testing.assert_array_equal(arrays["gated"][~taken], test.extra["pred"][~taken])
    assert result["gated_taken"] == pytest.approx(taken.mean())

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(result["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "acdc-correctors"
    assert {"dice_mean", "gated_dice_mean", "input_dice_mean", "train_loss"} <= set(
        run.data.metrics
    )
    name = {"nvae": "acdc-nvae-corrector", "context": "acdc-nvae-context"}[variant]
    version = client.get_model_version(name, result["model_version"])
    assert version.tags["eval.split"] == "test" and version.tags["variant"] == variant
    assert version.tags["init_from_nvae"] == "True"
    assert client.get_model_version_by_alias(name, "challenger").version == version.version
    # the serving requirements are stated (torch, numpy), not inferred from the training stack
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    deps = Path(mlflow.pyfunc.get_model_dependencies(f"models:/{name}/{version.version}"))
    assert "torch==" in deps.read_text() and "monai" not in deps.read_text()
    assert (project / "models/correctors" / f"{variant}.ckpt").is_file()
    # The gate, chosen on the validation rows, is the one applied to test and travels with it.
    choice = result["gate"]
    chosen = GateParams.model_validate_json(version.tags["gate"])
    assert choice["chosen"] == chosen.name
    val = {row.pop("gate"): row for row in choice["val"]}
    assert choose_gate(val, params.correctors.gate_tolerance) == chosen
    assert result["val_gated_dice_mean"] == val[chosen.name]["dice_mean"]
    assert str(arrays["gate"]) == chosen.name and run.data.tags["gate"] == chosen.name
    metrics = json.loads((project / "metrics/correctors" / f"{variant}.metrics.json").read_text())
    assert "gate" not in metrics and "val_gated_dice_mean" in metrics  # one figure, not a table
    corrector = load_corrector(
        str(project / "models/correctors" / f"{variant}.ckpt"), params, project
    )
    assert corrector.gate == chosen


@pytest.mark.slow
def test_report_stage_after_both_correctors(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params = load_params(project / "params.yaml", CardiacParams)
    for variant in ("nvae", "context"):
        if not (project / "data/corrections" / f"{variant}.npz").is_file():
            train_corrector(params, variant, root=project)  # type: ignore[arg-type]
    monkeypatch.chdir(project)
    assert main(["evaluate", "correction", "--params", "params.yaml"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((project / params.correction.metrics).read_text())
    assert saved.keys() == printed.keys()
    for method in ("before", "nvae", "nvae-gated", "context", "context-gated"):
        assert method in saved, method
    report = (project / params.correction.out / "report.md").read_text().splitlines()
    assert report[2].startswith(f"**Made with profile `{params.profile}` on `{params.acdc.raw}`")
    gates = {v: str(load_predictions(project / "data/corrections" / f"{v}.npz",
                                      load_split(project / "acdcseg/test.npz"))["gate"])
             for v in ("nvae", "context")}  # fmt: skip
    assert f"validation rows): nvae: {gates['nvae']}, context: {gates['context']}." in report[2]
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    [run] = client.search_runs(
        [client.get_experiment_by_name("acdc-correctors").experiment_id],
        "attributes.run_name = 'correction-report'",
    )
    assert "before.dice_mean" in run.data.metrics


@pytest.mark.slow
def test_a_new_corrector_is_one_table_row_and_its_params(
    project: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README, "Extending": a toy corrector (the plain corrector's input, another beta) added as
    one row of ``seglab.variants.CORRECTORS`` plus its params section flows through the CLI's
    train -> register -> report with no other change."""
    toy = NvaeVariant(
        "toy", "pred", "acdcseg", "acdcseg.out", 4, "acdc-nvae-toy", "toy",
        model_defaults={"beta": (2.0, 2.0)},
    )  # fmt: skip
    monkeypatch.setitem(CORRECTORS, "toy", toy)
    root = tmp_path / "project"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("data", "models"))
    raw = yaml.safe_load((root / "params.yaml").read_text())
    trainer = raw["correctors"]["nvae"]["trainer"]
    raw["correctors"] |= {
        "variants": ["toy"],
        "toy": {"model": tiny_model(4, [2.0, 2.0]), "trainer": trainer},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(root)

    assert main(["train", "corrector", "--variant", "toy", "--params", "params.yaml"]) == 0
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    version = client.get_model_version_by_alias("acdc-nvae-toy", "challenger")
    assert version.tags["variant"] == "toy"
    capsys.readouterr()
    assert main(["evaluate", "correction", "--params", "params.yaml"]) == 0
    saved = json.loads((root / "metrics/correction.json").read_text())
    assert {"before", "toy", "toy-gated"} <= set(saved)
    assert "toy" in (root / "reports/correction/report.md").read_text()
    # the params section of a name that is no row is refused like any unknown key
    raw["correctors"]["typo"] = raw["correctors"].pop("toy")
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="typo"):
        load_params(root / "params.yaml", CardiacParams)


def collapsed(in_channels: int, beta: list[float]) -> NvaeModule:
    """The quick profile's NVAE: it decodes every input to background."""
    module = NvaeModule(NvaeParams(**tiny_model(in_channels, beta)), SIZE).eval()
    with torch.no_grad():
        module.model.head[-1].bias.copy_(torch.tensor([1e3, 0.0, 0.0, 0.0]))
    return module


def save(module: NvaeModule, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


def test_an_erasing_corrector_is_never_gated_in_and_its_figures_say_so(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick profile's failure, without training: the corrector and the NVAE of
    ground-truth masks both decode to background, so every input heart has plausibility
    0 < 0.8 and every correction is an "anatomically valid" empty mask."""
    root = tmp_path / "project"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    save(collapsed(4, [1.0, 1.0]), root / "nvae" / "nvae.ckpt")
    module = collapsed(4, [1.0, 1.0])
    best = save(module, tmp_path / "fit" / "best.ckpt")

    def fit(*args: object, **kwargs: object) -> NvaeFit:
        return NvaeFit(module, best, best, 0.0, 1, (), 0.0, None)

    def register(model: object, name: str, example: object, tags: dict | None = None) -> object:
        client = MlflowClient(mlflow.get_tracking_uri())
        run = mlflow.active_run()
        try:
            client.create_registered_model(name)
        except MlflowException:
            pass
        uri = f"{run.info.artifact_uri}/model"
        return client.create_model_version(name, uri, run_id=run.info.run_id, tags=tags)

    monkeypatch.setattr(correctors, "train_nvae_model", fit)
    monkeypatch.setattr(correctors, "log_and_register", register)
    params = load_params(root / "params.yaml", CardiacParams)
    result = train_corrector(params, "nvae", root=root)

    test = load_split(root / "acdcseg" / "test.npz")
    arrays = load_predictions(root / "data/corrections" / "nvae.npz", test)
    heart = test.extra["pred"].reshape(len(test), -1).any(axis=1)
    assert heart.all() and (arrays["plausibility"] == 0).all()
    assert not arrays["after"].any() and arrays["emptied"].all()
    assert not arrays["valid_after"].any() and not arrays["taken"].any()
    np.testing.assert_array_equal(arrays["gated"], test.extra["pred"])
    assert result["gated_taken"] == 0.0
    assert result["anatomical_validity"] == 0.0 and result["dice_mean"] == 0.0
    assert result["emptied"] == len(test) and result["emptied_fraction"] == 1.0
    assert result["gated_emptied"] == result["input_emptied"] == 0
    assert result["gated_dice_mean"] == result["input_dice_mean"]
    run = MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(result["run_id"])
    assert run.data.metrics["emptied_fraction"] == 1.0 and run.data.metrics["gated_taken"] == 0


def test_predictions_must_line_up_with_acdcseg(project: Path, tmp_path: Path) -> None:
    test = load_split(project / "acdcseg" / "test.npz")
    path = tmp_path / "nvae.npz"
    with pytest.raises(DataError, match="corrections not found"):
        load_predictions(path, test)
    shuffled = test.meta["patient"].to_numpy()[::-1]
    np.savez(
        path,
        after=test.label,
        **{
            f"row.{k}": test.meta[k].to_numpy().astype(str)
            for k in ("phase", "slice_index", "segmenter")
        },
        **{"row.patient": shuffled.astype(str)},
    )
    with pytest.raises(DataError, match="patient differs"):
        load_predictions(path, test)


def test_the_report_says_when_its_figures_come_from_the_phantom() -> None:
    phantom = CardiacParams()
    assert "the generated phantom" in provenance(phantom)
    real = phantom.model_copy(
        update={"acdc": phantom.acdc.model_copy(update={"raw": "/data/ACDC/database"})}
    )
    assert provenance(real) == "Made with profile `quick` on `/data/ACDC/database`."
