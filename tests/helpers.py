"""What several test modules need: git and DVC in throwaway repositories, tiny network sizes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from seglab.config import (
    AttentionUnetParams,
    NvaeParams,
    ResUNetParams,
    SegmenterNetsParams,
    SwinUnetrParams,
    UNetParams,
)

#: The four segmenters at sizes that train a step in well under a second.
TINY = SegmenterNetsParams(
    unet=UNetParams(channels=(4, 8, 16)),
    resunet=ResUNetParams(channels=(4, 8, 16)),
    attunet=AttentionUnetParams(channels=(4, 8, 16)),
    swinunetr=SwinUnetrParams(feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)),
)


def tiny_nvae(**overrides: object) -> NvaeParams:
    """An NVAE of two scales and a few channels (a forward pass in milliseconds), ``overrides``
    on top."""
    base: dict[str, object] = dict(
        stem_channels=2,
        preprocess_blocks=1,
        groups_per_scale=(1, 1),
        latent_channels=2,
        beta=(1.0, 1.0),
    )
    return NvaeParams(**{**base, **overrides})


def git(root: Path, *args: str) -> str:
    """Run ``git ARGS`` in ``root`` as a fixed test identity; its stdout, stripped."""
    done = subprocess.run(
        ["git", "-c", "user.name=seglab", "-c", "user.email=seglab@example.org", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def dvc(root: Path, *args: str) -> None:
    """Run a DVC command in-process (its CLI entry point), as `dvc ARGS` in ``root``."""
    from dvc.cli import main

    cwd = Path.cwd()
    os.chdir(root)
    try:
        assert main(list(args)) == 0, f"dvc {' '.join(args)} failed"
    finally:
        os.chdir(cwd)
