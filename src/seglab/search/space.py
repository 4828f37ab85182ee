"""The search space: Optuna trial parameters <-> NVAE settings.

A trial's parameters are flat: ``beta_0`` .. ``beta_{S-1}`` (one per latent scale, 0 the finest,
the order of ``NvaeParams.beta``), ``stem_channels`` and, when searched, ``kl_warmup_steps``.
TPE and random sampling draw betas from one range for every scale (integers when the range has a
whole-number step, floats otherwise) and the other two from categorical lists; the grid sampler
takes every combination of the grid's values, all categorical. :meth:`SearchSpace.overlay` turns
parameters back into the NVAE settings they stand for (what the best-params file holds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from seglab.config import NvaeParams, SearchGridParams, SearchParams, SearchSpaceParams
from seglab.errors import ConfigError

STEM = "stem_channels"
WARMUP = "kl_warmup_steps"


def beta_name(scale: int) -> str:
    return f"beta_{scale}"


def _number(value: float) -> int | float:
    """8.0 -> 8: whole numbers as ints, so grids and files read like the study's."""
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True)
class SearchSpace:
    """What a trial varies, for an NVAE with ``scales`` latent scales."""

    space: SearchSpaceParams
    grid: SearchGridParams
    scales: int
    use_grid: bool

    @classmethod
    def from_params(cls, search: SearchParams, nvae: NvaeParams) -> SearchSpace:
        return cls(search.space, search.grid, len(nvae.groups_per_scale), search.sampler == "grid")

    @property
    def integer_beta(self) -> bool:
        r = self.space.beta
        return r.step is not None and all(float(v).is_integer() for v in (r.low, r.high, r.step))

    def names(self) -> list[str]:
        names = [beta_name(s) for s in range(self.scales)] + [STEM]
        warmups = self.grid.kl_warmup_steps if self.use_grid else self.space.kl_warmup_steps
        return names + ([WARMUP] if warmups else [])

    def grid_space(self) -> dict[str, list[int | float]]:
        """The grid sampler's search space: every parameter with its values."""
        space: dict[str, list[int | float]] = {
            beta_name(s): [_number(b) for b in self.grid.beta] for s in range(self.scales)
        }
        space[STEM] = list(self.grid.stem_channels)
        if self.grid.kl_warmup_steps:
            space[WARMUP] = list(self.grid.kl_warmup_steps)
        return space

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid_space().values())

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw (or, for an enqueued or retried trial, read back) this trial's parameters."""
        if self.use_grid:
            return {
                name: trial.suggest_categorical(name, values)
                for name, values in self.grid_space().items()
            }
        params: dict[str, Any] = {}
        r = self.space.beta
        for s in range(self.scales):
            if self.integer_beta:
                assert r.step is not None
                params[beta_name(s)] = trial.suggest_int(
                    beta_name(s), int(r.low), int(r.high), step=int(r.step)
                )
            else:
                params[beta_name(s)] = trial.suggest_float(
                    beta_name(s), r.low, r.high, step=r.step, log=r.log
                )
        params[STEM] = trial.suggest_categorical(STEM, list(self.space.stem_channels))
        if self.space.kl_warmup_steps:
            params[WARMUP] = trial.suggest_categorical(WARMUP, list(self.space.kl_warmup_steps))
        return params

    def overlay(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The NVAE settings a trial's parameters stand for (``nvae.model`` keys)."""
        out: dict[str, Any] = {
            "beta": [_number(params[beta_name(s)]) for s in range(self.scales)],
            "stem_channels": int(params[STEM]),
        }
        if WARMUP in params:
            out["kl_warmup_steps"] = int(params[WARMUP])
        return out

    def apply(self, base: NvaeParams, params: Mapping[str, Any]) -> NvaeParams:
        """``base`` with a trial's settings, validated like params.yaml."""
        return NvaeParams.model_validate({**base.model_dump(mode="json"), **self.overlay(params)})

    def trial_params(self, overlay: Mapping[str, Any]) -> dict[str, Any]:
        """Trial parameters from NVAE settings (an ``enqueue`` entry); keys the search does not
        vary are refused, ones it varies but the entry leaves out are left to the sampler."""
        searched = {"beta", STEM} | ({WARMUP} if WARMUP in self.names() else set())
        unknown = set(overlay) - searched
        if unknown:
            raise ConfigError(
                f"search.enqueue: {sorted(unknown)} are not searched (only {sorted(searched)})"
            )
        params: dict[str, Any] = {}
        if "beta" in overlay:
            beta = overlay["beta"]
            if not isinstance(beta, Sequence) or len(beta) != self.scales:
                raise ConfigError(
                    f"search.enqueue: beta {beta} needs one value per scale ({self.scales})"
                )
            for s, value in enumerate(beta):
                params[beta_name(s)] = int(value) if self.integer_beta else float(value)
        for key in (STEM, WARMUP):
            if key in overlay:
                params[key] = int(overlay[key])
        return params
