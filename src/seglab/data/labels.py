"""Label ids of the cardiac masks and the order in which every metric reports structures.

Masks store 0 background, 1 RV, 2 MYO, 3 LV (the ACDC convention). Metrics report
structures in the order LV, MYO, RV (the order of the study's tables), so the two
orders differ: always go through these constants, never through bare numbers.
"""

from __future__ import annotations

BACKGROUND = 0
RV = 1
MYO = 2
LV = 3
NUM_LABELS = 4

STRUCTURES: tuple[str, ...] = ("lv", "myo", "rv")
"""Reporting order of the foreground structures (column order of every per-class array)."""

STRUCTURE_LABELS: tuple[int, ...] = (LV, MYO, RV)
"""Label id of each entry of ``STRUCTURES`` (``STRUCTURE_LABELS[i]`` is ``STRUCTURES[i]``)."""
