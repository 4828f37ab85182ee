"""Lightning DDP across two CPU processes (gloo), through the CLI as a lab would run it on N
devices: the segmenter, NVAE and corrector stages finish, log exactly one MLflow run and register
one version each, and the validation figure they logged is the whole validation split's (reduced
across both processes), as a single process computes it from the same weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from mlflow import MlflowClient
from torch.utils.data import DataLoader, TensorDataset

from seglab.config import TrainerParams, merge_mappings
from seglab.data.acdcseg import nvae_tensors
from seglab.data.store import load_split
from seglab.inference.nvae import load_nvae
from seglab.inference.segment import context_of, image_tensor, load_segmenter
from seglab.training.fit import make_trainer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DDP = {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 1,
       "limit_train_batches": 2, "limit_val_batches": 1.0, "threads": 1}  # fmt: skip


def seglab(root: Path, *args: str) -> str:
    """Run the CLI in ``root`` as its own process (DDP starts the workers from its command)."""
    command = [str(Path(sys.executable).with_name("seglab")), *args, "--params", "params.yaml"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"seglab {' '.join(args)}:\n{done.stderr[-4000:]}"
    return done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick-profile phantom project whose three trainers each run on two processes."""
    root = tmp_path_factory.mktemp("ddp")
    params = merge_mappings(
        yaml.safe_load((ROOT / "params.yaml").read_text()),
        {
            "acdc": {"phantom": {"patients": 15}},
            "segmenters": {
                "archs": ["unet"],
                "nets": {"unet": {"channels": [4, 8, 16]}},
                "train": {"trainer": DDP},
                "arch_train": {"unet": {"trainer": DDP}},
            },
            "nvae": {"trainer": DDP, "samples": 4},
            "correctors": {"nvae": {"trainer": DDP}},
        },
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    command = [str(Path(sys.executable).with_name("seglab")), "phantom", "acdc"]
    subprocess.run([*command, "data/phantom/acdc", "--patients", "15"], cwd=root, check=True)
    seglab(root, "prepare", "acdc")
    return root


def single_process_validation(
    module: L.LightningModule, inputs: torch.Tensor, targets: Any
) -> float:
    trainer = make_trainer(TrainerParams(accelerator="cpu", devices=1), progress_bar=False)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=8)
    return float(trainer.validate(module, loader, verbose=False)[0]["val_dice_mean"])


def logged_once(root: Path, experiment: str, registered: str) -> dict[str, float]:
    """The one run of ``experiment`` (and one version of ``registered``); its last metrics."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    assert runs[0].info.status == "FINISHED"
    assert len(client.search_model_versions(f"name='{registered}'")) == 1
    return runs[0].data.metrics


def test_segmenter_trains_on_two_processes(project: Path) -> None:
    log = seglab(project, "train", "segmenter", "--arch", "unet")
    assert log.count("epoch 1/1") == 1  # the progress line comes from rank 0 only
    metrics = logged_once(project, "acdc-segmenters", "acdc-segmenter-unet")
    val = load_split(project / "data/prepared/acdc/val.npz")
    module = load_segmenter(project / "models/segmenters/unet.ckpt")
    alone = single_process_validation(
        module, image_tensor(val, context_of(module)), torch.from_numpy(val.label)
    )
    # DistributedSampler pads the split to a multiple of 2: at most one slice counted twice.
    assert metrics["val_dice_mean"] == pytest.approx(alone, abs=0.02)
    assert "dice_mean" in metrics  # rank 0 went on to test, log and register


def test_nvae_and_corrector_train_on_two_processes(project: Path) -> None:
    seglab(project, "acdcseg", "build")
    seglab(project, "train", "nvae")
    metrics = logged_once(project, "acdc-nvae", "acdc-nvae")
    val = load_split(project / "data/prepared/acdc/val.npz")
    inputs, targets = nvae_tensors(val, "gt")
    alone = single_process_validation(load_nvae(project / "models/nvae/nvae.ckpt"), inputs, targets)
    assert metrics["val_dice_mean"] == pytest.approx(alone, abs=0.02)

    seglab(project, "train", "corrector", "--variant", "nvae")
    logged_once(project, "acdc-correctors", "acdc-nvae-corrector")
