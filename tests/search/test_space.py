"""The search space: params -> Optuna distributions, grids, and back to NVAE settings."""

from __future__ import annotations

import itertools

import optuna
import pytest
from pydantic import ValidationError

from seglab.config import NvaeParams, SearchParams
from seglab.errors import ConfigError
from seglab.search.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space_of(**search: object) -> SearchSpace:
    return SearchSpace.from_params(SearchParams.model_validate(search), NvaeParams())


def test_default_grid_is_27_points_and_holds_the_studys_best() -> None:
    space = space_of(sampler="grid")
    grid = space.grid_space()
    assert space.grid_size() == 27
    assert list(grid) == ["beta_0", "beta_1", "beta_2", "stem_channels"]
    points = set(itertools.product(grid["beta_0"], grid["beta_1"], grid["beta_2"]))
    assert (8, 10, 11) in points and len(points) == 27
    assert all(isinstance(v, int) for v in grid["beta_0"])  # 8, not 8.0
    assert space_of(sampler="grid", grid={"beta": [8, 9, 10, 11]}).grid_size() == 64


def test_grid_sampler_visits_every_point_once() -> None:
    search = SearchParams(sampler="grid", grid={"beta": [8, 11], "stem_channels": [4]})
    space = SearchSpace.from_params(search, NvaeParams())
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid_space(), seed=0))
    seen = []

    def objective(trial: optuna.Trial) -> float:
        seen.append(tuple(space.suggest(trial).values()))
        return 0.0

    study.optimize(objective, n_trials=20)  # the grid sampler stops the study when exhausted
    assert len(seen) == 8 and len(set(seen)) == 8


def test_integer_and_float_betas_stay_in_range() -> None:
    ints = space_of(space={"beta": {"low": 2, "high": 5, "step": 1}, "stem_channels": [4, 8]})
    floats = space_of(space={"beta": {"low": 0.5, "high": 2.0, "step": None, "log": True}})
    assert ints.integer_beta and not floats.integer_beta
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    other = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        a = ints.suggest(study.ask())
        assert all(isinstance(a[f"beta_{s}"], int) and 2 <= a[f"beta_{s}"] <= 5 for s in range(3))
        assert a["stem_channels"] in (4, 8) and "kl_warmup_steps" not in a
        b = floats.suggest(other.ask())
        assert all(0.5 <= b[f"beta_{s}"] <= 2.0 for s in range(3))


def test_overlay_and_apply_give_valid_nvae_settings() -> None:
    space = space_of(space={"kl_warmup_steps": [0, 100]})
    params = {"beta_0": 8, "beta_1": 10, "beta_2": 11, "stem_channels": 16, "kl_warmup_steps": 100}
    assert space.overlay(params) == {
        "beta": [8, 10, 11],
        "stem_channels": 16,
        "kl_warmup_steps": 100,
    }
    nvae = space.apply(NvaeParams(latent_channels=7), params)
    assert nvae.beta == (8.0, 10.0, 11.0) and nvae.stem_channels == 16
    assert nvae.kl_warmup_steps == 100 and nvae.latent_channels == 7  # the rest is kept
    assert space.trial_params({"beta": [8, 10, 11], "stem_channels": 4}) == {
        "beta_0": 8,
        "beta_1": 10,
        "beta_2": 11,
        "stem_channels": 4,
    }


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"beta": [8, 10]}, "one value per scale"),
        ({"latent_channels": 4}, "not searched"),
        ({"kl_warmup_steps": 5}, "not searched"),  # warm-up is not in the default space
    ],
)
def test_enqueue_entries_are_checked(entry: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        space_of().trial_params(entry)


@pytest.mark.parametrize(
    "beta",
    [{"low": 5, "high": 2}, {"low": 1, "high": 4, "step": 1, "log": True}],
)
def test_bad_beta_ranges_are_refused(beta: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SearchParams.model_validate({"space": {"beta": beta}})
