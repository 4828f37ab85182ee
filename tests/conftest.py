"""Shared fixtures: where the real data is, and generated phantoms built once per session."""

from __future__ import annotations

import os
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
