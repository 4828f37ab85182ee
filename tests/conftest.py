"""Shared fixtures: where the real data is, and generated phantoms built once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEGLAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
ACDC_REAL = SHARED_DATA / "acdc"
LGG_REAL_ZIP = SHARED_DATA / "lgg" / "lgg-mri-segmentation.zip"


@pytest.fixture(scope="session")
def acdc_real() -> Path:
    """The shared ACDC copy (official layout); tests using it are skipped where it is absent."""
    if not (ACDC_REAL / "database" / "training").is_dir():
        pytest.skip(f"real ACDC not found at {ACDC_REAL} (set SEGLAB_SHARED_DATA)")
    return ACDC_REAL


@pytest.fixture(scope="session")
def lgg_real_zip() -> Path:
    """The shared 13-patient LGG zip, as downloaded."""
    if not LGG_REAL_ZIP.is_file():
        pytest.skip(f"real LGG zip not found at {LGG_REAL_ZIP} (set SEGLAB_SHARED_DATA)")
    return LGG_REAL_ZIP


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the test models are small, and on a busy 2-core machine torch's
    threads spin-wait for each other (the same test measured 10-25x slower with two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
