"""The brain study's model: the recipe of ``architectures.train`` reaches the module."""

from __future__ import annotations

import torch

from seglab.config import LggArchsParams
from seglab.training.lgg import new_module


def test_the_networks_train_with_the_recipe_of_their_params() -> None:
    params = LggArchsParams.model_validate(
        {
            "train": {
                "lr": 2e-3,
                "batch_dice": True,
                "optimizer": "adamw",
                "weight_decay": 1e-4,
                "schedule": "cosine",
                "warmup_epochs": 1.0,
            }
        }
    )
    module = new_module("linknet-resnet18", params, None)
    assert module.num_classes == 1 and module.monitor == "val_iou"
    assert module.loss.dice.batch  # the Dice term pooled over the batch
    assert isinstance(module.optimizer(), torch.optim.AdamW)
    for key, value in {"lr": 2e-3, "schedule": "cosine", "warmup_epochs": 1.0,
                       "weight_decay": 1e-4, "name": "linknet-resnet18"}.items():  # fmt: skip
        assert module.hparams[key] == value, key
    assert params.train.settings() == {
        "lr": 2e-3,
        "loss": "dice_ce",
        "batch_dice": True,
        "optimizer": "adamw",
        "weight_decay": 1e-4,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
    }  # what the stage records beside the test figures
