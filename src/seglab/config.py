"""Typed parameters: params.yaml is read once here, validated, and passed down as objects.

No other module reads params.yaml or the environment. Each pipeline (the cardiac study in
``params.yaml``, the brain study in ``pipelines/lgg/params.yaml``) has its own root model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seglab.errors import ConfigError


class Section(BaseModel):
    """Base for every params section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitParams(Section):
    """Patient-level split fractions; the rest is train. Stratified by group, seeded."""

    val: float = Field(0.1, ge=0.0, lt=1.0)
    test: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        if self.val + self.test >= 1.0:
            raise ValueError("split.val + split.test must leave patients for training")
        return self


class PhantomParams(Section):
    patients: int = Field(20, ge=1)
    seed: int = 0


class TrackingParams(Section):
    """Where MLflow writes. Relative paths resolve against the project root (the cwd)."""

    uri: str = "sqlite:///mlflow.db"
    artifacts: str = "mlartifacts"


class AcdcPrepareParams(Section):
    """ED/ES volumes -> 2D slices at ``size`` x ``size``.

    ``crop`` picks the heart centre: ``motion`` (default) uses the ED-ES difference image and
    no ground truth, ``center`` takes the image centre, ``gt`` the bounding box of the ground
    truth (study-compatible; leaks the answer into test inputs). The field of view is
    ``fov_mm`` in both axes, so every slice keeps a known pixel spacing of fov_mm / size.
    """

    size: int = Field(128, ge=16)
    fov_mm: float = Field(200.0, gt=0)
    crop: Literal["motion", "center", "gt"] = "motion"
    percentiles: tuple[float, float] = (1.0, 99.0)
    split: SplitParams = SplitParams()


class AcdcDataParams(Section):
    """``raw`` is the dataset path: an ACDC ``database`` folder, a folder of patients, or a zip."""

    raw: str = "data/phantom/acdc"
    prepared: str = "data/prepared/acdc"
    phantom: PhantomParams = PhantomParams()
    prepare: AcdcPrepareParams = AcdcPrepareParams()


class TrainerParams(Section):
    """Lightning trainer settings shared by every training stage (precision/devices are settings,
    so the same code runs bf16 on a GPU and fp32 on a CPU)."""

    max_epochs: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = "auto"
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = "auto"
    seed: int = 0
    early_stopping_patience: int | None = Field(None, ge=1)


class NvaeOptimParams(Section):
    """The study's optimiser: Adamax with cosine annealing to ``lr_min``."""

    lr: float = Field(1e-2, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = Field(1e-3, gt=0)
    weight_decay: float = Field(3e-4, ge=0)
    lr_min: float = Field(1e-4, ge=0)


class NvaeParams(Section):
    """The NVAE for 4-class masks (see shared design nvae.md). Defaults are the study's."""

    in_channels: int = Field(4, ge=1)  # 4 for single masks, 12 for the 3-gram context
    num_classes: int = Field(4, ge=2)
    stem_channels: int = Field(4, ge=1)
    preprocess_blocks: int = Field(3, ge=0)  # stride-2 blocks between stem and first scale
    groups_per_scale: tuple[int, ...] = (4, 2, 1)  # from the finest latent scale to the coarsest
    latent_channels: int = Field(20, ge=1)
    bn_momentum: float = Field(0.05, gt=0, le=1)
    beta: tuple[float, ...] = (8.0, 10.0, 11.0)  # per scale, finest (16x16) to coarsest (4x4)
    kl_warmup_steps: int = Field(6420, ge=0)
    kl_warmup_min: float = Field(1e-4, ge=0, le=1)
    kl_balance: bool = True
    spectral_lambda: float = Field(0.0, ge=0)
    optim: NvaeOptimParams = NvaeOptimParams()

    @model_validator(mode="after")
    def _beta_per_scale(self) -> NvaeParams:
        if len(self.beta) != len(self.groups_per_scale):
            raise ValueError(
                f"beta has {len(self.beta)} values for {len(self.groups_per_scale)} scales"
            )
        return self


class CardiacParams(Section):
    """Root of params.yaml (the cardiac study). Later stages add their sections here."""

    profile: Literal["quick", "full"] = "quick"
    profiles: dict[str, dict[str, Any]] = {}
    acdc: AcdcDataParams = AcdcDataParams()
    tracking: TrackingParams = TrackingParams()


class LggPrepareParams(Section):
    size: int = Field(256, ge=16)
    split: SplitParams = SplitParams()


class LggDataParams(Section):
    """``raw`` is the Kaggle zip as downloaded or an extracted ``kaggle_3m`` folder."""

    raw: str = "data/phantom/lgg"
    prepared: str = "data/prepared/lgg"
    phantom: PhantomParams = PhantomParams(patients=6)
    prepare: LggPrepareParams = LggPrepareParams()


class BrainParams(Section):
    """Root of pipelines/lgg/params.yaml (the brain study)."""

    profile: Literal["quick", "full"] = "quick"
    profiles: dict[str, dict[str, Any]] = {}
    lgg: LggDataParams = LggDataParams()
    tracking: TrackingParams = TrackingParams()


P = TypeVar("P", bound=Section)


def load_params(path: str | Path, model: type[P]) -> P:
    """Read and validate a params file; every problem is reported with its key path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    try:
        merged = apply_profile(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc


def apply_profile(raw: dict[str, Any]) -> dict[str, Any]:
    """Overlay ``profiles[profile]`` onto the params, so one file holds both scales.

    The values written at the top level are the quick profile (runs anywhere on a CPU);
    ``profiles.full`` holds what differs at the study's scale. ``profile: full`` applies it.
    """
    profile = raw.get("profile", "quick")
    profiles = raw.get("profiles") or {}
    if profile != "quick" and profile not in profiles:
        raise ValueError(f"profile '{profile}' has no entry under 'profiles'")
    return _merge(raw, profiles.get(profile) or {})


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten(params: BaseModel, prefix: str = "") -> dict[str, object]:
    """Dotted-key view of a params object, as logged to MLflow."""
    out: dict[str, object] = {}
    for key, value in params:
        name = f"{prefix}{key}"
        if isinstance(value, BaseModel):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out
