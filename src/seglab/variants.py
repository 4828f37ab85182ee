"""Every NVAE the cardiac study trains, in one table: what it reads, how wide its input is, what
it is registered as, and what the search and the report call it.

The NVAE of ground-truth masks (stage ``train_nvae``) and the correctors (stage
``train_corrector@<name>``) differ only in these facts; the config's choices, the corrector and
search stages, the CLI's choices and the correction report all read them from here. Adding a
corrector is one :class:`NvaeVariant` in :data:`CORRECTORS` plus its params section
(``correctors.<name>``: ``CorrectorsParams`` holds one per row) and its name in
``correctors.variants`` (which DVC's ``foreach`` follows).

>>> CORRECTORS["context"].registered, CORRECTORS["context"].in_channels
('acdc-nvae-context', 12)
>>> SEARCH_TARGETS["corrector"] is CORRECTORS["nvae"]
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal

from pydantic import BaseModel

Source = Literal["gt", "pred", "context"]


@dataclass(frozen=True)
class NvaeVariant:
    """One NVAE of the study.

    Args:
        name: its params section and CLI choice (``correctors.<name>``; ``gt`` for the NVAE of
            ground-truth masks).
        source: what :func:`seglab.data.acdcseg.nvae_tensors` builds its inputs from: the
            ground-truth masks, a segmenter's predicted masks, or their 3-gram.
        dataset: the lineage name of its input dataset (MLflow's Datasets column).
        folder_param: the params key of that dataset's folder.
        in_channels: one-hot channels of its input (4 per mask, 12 for a 3-gram).
        registered: its registered model name.
        search_target: what ``seglab search nvae --target`` calls it.
        study: the study's published figures for it, shown beside ours in the report.
        model_defaults: its NVAE settings where its params section is absent (besides
            ``in_channels``), e.g. the study's beta for the 3-gram corrector.
    """

    name: str
    source: Source
    dataset: str
    folder_param: str
    in_channels: int
    registered: str
    search_target: str
    study: dict[str, float] = field(default_factory=dict)
    model_defaults: dict[str, Any] = field(default_factory=dict)

    def folder(self, params: BaseModel) -> str:
        """Its input dataset's folder under ``params`` (the cardiac study's)."""
        return str(attrgetter(self.folder_param)(params))


#: The NVAE of ground-truth masks (stage ``train_nvae``; the plausibility score of the gate).
GT = NvaeVariant("gt", "gt", "acdc_prepared", "acdc.prepared", 4, "acdc-nvae", "gt")

#: The correctors, by ``correctors.variants`` name.
CORRECTORS: dict[str, NvaeVariant] = {
    v.name: v
    for v in (
        NvaeVariant(
            "nvae", "pred", "acdcseg", "acdcseg.out", 4, "acdc-nvae-corrector", "corrector",
            study={"dice_mean": 0.8964, "improved": 75, "worsened": 42},
        ),
        NvaeVariant(
            "context", "context", "acdc3gram", "acdcseg.trigram", 12, "acdc-nvae-context",
            "context", study={"dice_mean": 0.8577, "improved": 41, "worsened": 112},
            model_defaults={"beta": (1.0, 1.0, 5.0)},
        ),
    )
}  # fmt: skip

#: What the search can train, by ``search.target`` name.
SEARCH_TARGETS: dict[str, NvaeVariant] = {v.search_target: v for v in (GT, *CORRECTORS.values())}
