"""The ``prepare_acdc`` stage: the data layer's preparation plus the metrics' ground-truth check.

Kept here (above both layers) so that ``seglab.data`` never imports ``seglab.metrics``.
"""

from __future__ import annotations

from typing import Any

from seglab.config import AcdcDataParams
from seglab.data.prepare_acdc import prepare_acdc
from seglab.data.store import SliceSet
from seglab.metrics.anatomy import check_slices


def anatomy_qc(slices: SliceSet) -> dict[str, Any]:
    """Anatomical validity of a split's ground-truth masks at the prepared resolution."""
    return check_slices(slices.label, slices.spacing).summary()


def prepare_acdc_stage(params: AcdcDataParams) -> str:
    """Prepare ACDC and record how anatomically valid its prepared ground truth is."""
    return prepare_acdc(params, qc=anatomy_qc)
