"""Typed parameters: params.yaml is read once here, validated, and passed down as objects.

No other module reads params.yaml or the environment. Each pipeline (the cardiac study in
``params.yaml``, the brain study in ``pipelines/lgg/params.yaml``) has its own root model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from seglab.errors import ConfigError
from seglab.variants import CORRECTORS, SEARCH_TARGETS


class Section(BaseModel):
    """Base for every params section: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _HasOutputFolders(Protocol):
    models: str
    metrics: str


class NamedOutputs:
    """The files of one trained model of a section with ``models`` and ``metrics`` folders,
    named here once: the stage that trains writes them, later stages and the benchmarks read
    them."""

    def checkpoint_path(self: _HasOutputFolders, name: str, root: Path) -> Path:
        """``<models>/<name>.ckpt``: the kept weights."""
        return Path(root) / self.models / f"{name}.ckpt"

    def metrics_path(self: _HasOutputFolders, name: str, root: Path) -> Path:
        """``<metrics>/<name>.json``: the test figures, timings, run and model version."""
        return Path(root) / self.metrics / f"{name}.json"

    def curves_path(self: _HasOutputFolders, name: str, root: Path) -> Path:
        """``<metrics>/<name>.curves.csv``: one row per epoch of the kept training."""
        return Path(root) / self.metrics / f"{name}.curves.csv"


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


class ServerParams(Section):
    """`seglab server`: an MLflow tracking server for a team (UI, REST API, proxied artifacts).

    ``backend_store_uri`` unset serves ``tracking.uri`` (the project's SQLite file); a team sets
    ``postgresql://user@host/mlflow``. ``artifacts_destination`` unset serves ``tracking.artifacts``
    (a project folder); a team sets an object store (``s3://bucket/mlflow``). The default host is
    loopback: exposing the server is a deliberate setting (with ``allowed_hosts``).
    """

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    workers: int = Field(4, ge=1)
    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    allowed_hosts: str | None = None


class TrackingParams(Section):
    """Where MLflow writes. Relative paths resolve against the project root (the cwd)."""

    uri: str = "sqlite:///mlflow.db"
    artifacts: str = "mlartifacts"
    server: ServerParams = ServerParams()


#: Dice 0.5 as IoU (IoU = Dice / (2 - Dice) for one mask pair: 1/3), as params.yaml writes it.
_IOU_OF_DICE_HALF = 0.3333


class PromotionParams(Section):
    """What ``seglab promote`` asks of every candidate before it compares it with the champion
    (the first version of a model included): a model that segments nothing is no champion,
    however it ranks.

    ``floors``: per metric, the worst value a candidate may have: a minimum for a
    higher-is-better metric (Dice 0.5 by default for the ``dice_*`` keys; for the LGG
    models' ``iou`` the same overlap, 1/3, since IoU = Dice / (2 - Dice)), a maximum for a
    lower-is-better one. Lower-is-better metrics (``hd95_mean``, ``train_seconds``,
    ``params_count``, ``model_mb``) have none by default: no value of them shows that a model
    segments at all, so promoting on them is guarded by the floor of the model family's own
    metric (``dice_mean`` for ``acdc-*``, ``iou`` for ``lgg-*``), which is checked whatever
    metric the promotion ranks on. A metric not listed has no floor.

    ``max_emptied``: the largest share of the candidate's evaluated slices showing a heart
    on which its masks may be all background (its run's ``emptied_fraction``,
    :mod:`seglab.metrics.emptied`); above it, its predictions are empty. Runs that do not
    record the figure (older versions, the LGG models) are judged by the floors alone.
    """

    floors: dict[str, float] = {
        "dice_mean": 0.5,
        "dice_lv": 0.5,
        "dice_myo": 0.5,
        "dice_rv": 0.5,
        "iou": _IOU_OF_DICE_HALF,
    }
    max_emptied: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("floors")
    @classmethod
    def _finite(cls, floors: dict[str, float]) -> dict[str, float]:
        bad = [name for name, value in floors.items() if not math.isfinite(value)]
        if bad:
            raise ValueError(f"floors must be finite numbers (not for {', '.join(bad)})")
        return floors


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
    # A wall-time budget for the whole fit (Lightning's max_time, kept across a resume): the
    # same minutes for every network is a fair comparison on one machine. null: epochs only.
    max_minutes: float | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = "auto"
    # Several devices or machines: Lightning's DDP ("ddp"; one process per device, launched by
    # the stage itself or by torchrun/SLURM) with num_nodes machines. One model per command:
    # cross-prediction and the search train several and take devices: 1 (README, "Scaling out").
    strategy: Literal["auto", "ddp", "ddp_find_unused_parameters_true"] = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = "auto"
    seed: int = 0
    early_stopping_patience: int | None = Field(None, ge=1)
    # The epoch a stage tests, exports and registers: the best validation score, or the last
    # one, the end of a decaying schedule (nnU-Net's final checkpoint), where a validation split
    # too small to choose among epochs would pick a noisy early peak.
    keep: Literal["best", "last"] = "best"
    # An exponential moving average of the weights (Lightning's EMAWeightAveraging, updated
    # every step): validation, the checkpoints and so every later stage use the averaged
    # weights, which smooth out the last noisy steps of small-batch training. null: off.
    ema_decay: float | None = Field(None, gt=0, lt=1)
    # Batches per training epoch: all (1.0), a fraction, or a count; for quick CPU runs.
    limit_train_batches: int | float = Field(1.0, gt=0)
    limit_val_batches: int | float = Field(1.0, gt=0)  # quick runs: a few val batches
    # Speed (benchmarks/README.md has the measurements): NHWC memory format for the convolutions,
    # torch.compile of the network (pays a compile of tens of seconds up front), and torch's
    # CPU threads (null: one per core; 1 is faster for small networks on a busy small machine).
    channels_last: bool = False
    compile: bool = False
    threads: int | None = Field(None, ge=1)
    # Inference batch (prediction, reconstruction, correction); null: 8 on a CPU, where small
    # batches stay in cache (2-3x the slices/s of 64 for the NVAE), 64 on a GPU.
    eval_batch_size: int | None = Field(None, ge=1)


class NvaeOptimParams(Section):
    """The study's optimiser: Adamax with cosine annealing to ``lr_min``. Two stabilisers the
    study did not use, off by default: a linear learning-rate warm-up over ``warmup_steps``
    (from 1% of ``lr``; the NVAE paper warms up too) and clipping the gradients' global norm
    at ``grad_clip`` (the first steps of a wide stem otherwise blow the KL up)."""

    lr: float = Field(1e-2, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = Field(1e-3, gt=0)
    weight_decay: float = Field(3e-4, ge=0)
    lr_min: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)


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

    def network(self) -> dict[str, Any]:
        """The network's own arguments (:class:`seglab.models.nvae.Nvae`; the image size is the
        data's): the rest of this section is the objective's and the optimiser's."""
        keys = ("in_channels", "num_classes", "stem_channels", "preprocess_blocks")
        keys += ("groups_per_scale", "latent_channels", "bn_momentum")
        return {key: getattr(self, key) for key in keys}

    @model_validator(mode="after")
    def _beta_per_scale(self) -> NvaeParams:
        if len(self.beta) != len(self.groups_per_scale):
            raise ValueError(
                f"beta has {len(self.beta)} values for {len(self.groups_per_scale)} scales"
            )
        return self


class NvaeStageParams(Section):
    """The NVAE trained on ground-truth masks (DVC stage ``train_nvae``, MLflow experiment
    ``acdc-nvae``, registered as ``acdc-nvae``): network, training, evaluation, outputs."""

    model: NvaeParams = NvaeParams()
    trainer: TrainerParams = TrainerParams()
    # Per-step curves (loss, recon, KL per scale, warm-up coefficient) every n optimiser steps.
    log_every_n_steps: int = Field(10, ge=1)
    samples: int = Field(200, ge=1)  # masks generated from the prior for sample_validity
    temperature: float = Field(1.0, gt=0)  # scales every prior std when sampling
    figure_rows: int = Field(6, ge=1)  # slices / samples shown in the figures
    models: str = "models/nvae"  # nvae.ckpt: the lowest-validation-loss epoch
    metrics: str = "metrics/nvae"  # nvae.json (test figures, timings), curves.csv (per epoch)
    work: str = "data/work/nvae"  # checkpoints of an unfinished training (resumed), then removed


class AugmentParams(Section):
    """Per-sample random flips and a small affine, applied to whole batches on the device."""

    enabled: bool = True
    flip: bool = True  # each axis flipped with probability 1/2
    rotate_deg: float = Field(10.0, ge=0, le=180)  # angle drawn from [-r, r]
    scale: float = Field(0.1, ge=0, lt=1)  # isotropic zoom drawn from [1 - s, 1 + s]
    translate: float = Field(0.05, ge=0, lt=0.5)  # shift per axis, fraction of the image size
    # Intensity (nnU-Net's kinds; 0 = off): each drawn per sample, on with probability
    # intensity_p, the same for every channel of a sample (2.5D neighbours share a scanner).
    intensity_p: float = Field(0.3, ge=0, le=1)
    brightness: float = Field(0.0, ge=0, lt=1)  # intensities times a factor in [1 - b, 1 + b]
    contrast: float = Field(0.0, ge=0, lt=1)  # spread about the mean times [1 - c, 1 + c]
    gamma: float = Field(0.0, ge=0)  # x -> x ** g on [0, 1], log g uniform in +-log(1 + gamma)
    noise_std: float = Field(0.0, ge=0)  # Gaussian noise, std drawn from [0, noise_std]


class UNetParams(Section):
    """MONAI ``UNet``: one level per channel count.

    ``residual_units`` is MONAI's ``num_res_units``: 0 gives the plain UNet, 2 the study's
    ResUNet (two residual units per block). ``strides`` is MONAI's too, one per level after the
    first (null: 2 everywhere). MONAI's UNet down-samples in its very first convolution, so with
    strides of 2 no feature map has the input's resolution; a first stride of 1 adds a
    full-resolution level, which thin structures (the myocardium, apical slices) need
    (benchmarks/README.md, time to Dice).
    """

    channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    strides: tuple[int, ...] | None = None
    residual_units: int = Field(0, ge=0)
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _one_stride_per_level(self) -> UNetParams:
        if self.strides is not None and len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"strides needs one value per level after the first ({len(self.channels) - 1}),"
                f" got {len(self.strides)}"
            )
        return self


class ResUNetParams(UNetParams):
    """The study's ResUNet: a MONAI ``UNet`` with two residual units per block."""

    residual_units: int = Field(2, ge=1)


class AttentionUnetParams(Section):
    """MONAI ``AttentionUnet``: attention gates on the skip connections."""

    channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    dropout: float = Field(0.0, ge=0, lt=1)


class SwinUnetrParams(Section):
    """MONAI ``SwinUNETR`` in 2D; encoder widths are ``feature_size`` x (1, 2, 4, 8, 16).

    Inputs must be divisible by 32 (patch 2, then four merges). ``use_v2`` adds MONAI's
    SwinUNETR-V2 residual convolution block before each Swin stage (off in the study).
    """

    feature_size: int = Field(48, ge=12, multiple_of=12)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    use_v2: bool = False


class SegmenterNetsParams(Section):
    """Network sizes per architecture (the names are the ``--arch`` values and DVC variants)."""

    unet: UNetParams = UNetParams()
    resunet: ResUNetParams = ResUNetParams()
    attunet: AttentionUnetParams = AttentionUnetParams()
    swinunetr: SwinUnetrParams = SwinUnetrParams()


#: The architectures' names: the fields of ``segmenters.nets`` (a new architecture is a field
#: there and a builder in ``seglab.models.segmenters.BUILDERS``).
SegmenterArch = Literal[tuple(SegmenterNetsParams.model_fields)]  # type: ignore[valid-type]
#: The training recipe's named choices (``RecipeParams``), also the trainer's argument types.
LossName = Literal["dice_ce", "dice", "ce"]
OptimizerName = Literal["adam", "adamw", "sgd"]
ScheduleName = Literal["constant", "cosine", "poly"]


class RecipeParams(Section):
    """How a network is trained in the shared ``SegmentationModule`` (the cardiac segmenters and
    the brain study's networks alike): MONAI Dice + cross-entropy, Adam at 1e-3 by default.

    ``optimizer``, ``weight_decay``, ``schedule`` and ``warmup_epochs`` set the recipe: a
    constant-rate Adam by default; ``adamw`` with a linear warm-up and a ``cosine`` or ``poly``
    (nnU-Net's, exponent 0.9) decay to zero reaches a given Dice in far fewer epochs
    (benchmarks/README.md, time to Dice); ``sgd`` is nnU-Net's optimiser (Nesterov momentum
    0.99; with ``poly`` and ``lr: 1.0e-2``, its whole recipe). The decay ends with the
    training: at ``max_epochs``, or at ``trainer.max_minutes`` when that comes first.
    """

    lr: float = Field(1e-3, gt=0)
    loss: LossName = "dice_ce"
    batch_dice: bool = False  # the Dice term over the whole batch, not per slice (nnU-Net 2D)
    optimizer: OptimizerName = "adam"
    weight_decay: float = Field(0.0, ge=0)
    schedule: ScheduleName = "constant"
    warmup_epochs: float = Field(0.0, ge=0)
    augment: AugmentParams = AugmentParams()
    trainer: TrainerParams = TrainerParams()

    @classmethod
    def setting_keys(cls) -> tuple[str, ...]:
        """The keys of :meth:`settings`, in declaration order."""
        return tuple(k for k in RecipeParams.model_fields if k not in ("augment", "trainer"))

    def settings(self) -> dict[str, Any]:
        """The optimiser, loss and schedule as plain values, recorded beside the results they
        gave (augmentation and trainer settings are recorded apart)."""
        return self.model_dump(include=set(self.setting_keys()))


class SegmenterTrainParams(RecipeParams):
    """How every segmenter is trained: the recipe, Adam at 1e-3 by default (the study's), and
    what the network sees of the slice's volume."""

    # 2.5D input: this many neighbouring slices of the same volume on either side become extra
    # input channels (0: the slice alone, as in the study). Through-plane context tells a 2D
    # network whether it sits above the base or below the apex, where a structure should vanish.
    context_slices: int = Field(0, ge=0)
    # The slice's place in its stack (0 at the first slice, 1 at the last) as one more input
    # channel: the slices above the base and below the apex look like heart but are unlabelled.
    slice_position: bool = False
    # The two outermost slices at each end of every stack drawn this many times as often as the
    # others in training (1: uniform): where a structure starts and stops is where the per-slice
    # Dice loses most (whole slices missed or predicted beyond the base or the apex).
    oversample_ends: float = Field(1.0, ge=1.0)


class SegmentersParams(Section, NamedOutputs):
    """The four ACDC segmenters: which to train, their sizes, training, and where outputs go."""

    archs: tuple[SegmenterArch, ...] = tuple(SegmenterNetsParams.model_fields)
    models: str = "models/segmenters"  # <arch>.ckpt (best validation Dice), <arch>.crossfit.npz
    metrics: str = "metrics/segmenters"  # <arch>.json test metrics, <arch>.crossfit.json
    work: str = "data/work/segmenters"  # last.ckpt of an unfinished training, to resume it
    nets: SegmenterNetsParams = SegmenterNetsParams()
    train: SegmenterTrainParams = SegmenterTrainParams()
    # Per-architecture overrides of ``train`` (same keys, merged onto it): an epoch budget or a
    # memory format that suits one network, e.g. ``swinunetr: {trainer: {max_epochs: 24}}``.
    arch_train: dict[SegmenterArch, dict[str, Any]] = {}
    # Connected-component clean-up of the predictions (seglab.inference.postprocess): auto picks
    # the method, the smallest region kept and the step across slices with the best validation
    # Dice after training (none unless one earns its place); a method names one, with
    # postprocess_min_pixels and postprocess_across_slices (each structure's largest 3D region).
    postprocess: Literal["auto", "none", "heart", "structures"] = "auto"
    postprocess_min_pixels: int = Field(0, ge=0)
    postprocess_across_slices: bool = False
    # Predict from the softmax averaged over each slice's four flips (4x the inference time):
    # auto keeps it only when it raises the validation Dice after training.
    flips: Literal["auto"] | bool = "auto"

    @model_validator(mode="after")
    def _unique_archs(self) -> SegmentersParams:
        if len(set(self.archs)) != len(self.archs):
            raise ValueError(f"archs lists an architecture twice: {list(self.archs)}")
        for arch in self.arch_train:
            self.train_for(arch)  # an unknown or invalid override fails here, with its path
        return self

    def train_for(self, arch: str) -> SegmenterTrainParams:
        """``train`` with ``arch_train[arch]`` merged onto it."""
        override = self.arch_train.get(arch)  # type: ignore[call-overload]
        if not override:
            return self.train
        merged = merge_mappings(self.train.model_dump(mode="json"), override)
        return SegmenterTrainParams.model_validate(merged)

    def crossfit_path(self, arch: str, root: Path) -> Path:
        """Where ``arch``'s predictions of the train split (ACDCSeg's train rows) live."""
        return Path(root) / self.models / f"{arch}.crossfit.npz"


class AcdcSegParams(Section):
    """ACDCSeg (every segmenter's predicted masks) and its 3-gram context form.

    ``folds`` decides how the *train* split's predictions are made: K >= 2 is K-fold
    cross-prediction over the training patients (each slice predicted by a model that never
    saw its patient); 1 is the study's in-sample predictions by the final model (optimistic,
    flagged in meta.json). Val and test are always predicted by the final models.
    """

    folds: int = Field(5, ge=1)
    seed: int = 0
    out: str = "data/acdcseg"
    trigram: str = "data/acdc3gram"


class BetaRangeParams(Section):
    """Where the TPE/random samplers draw every scale's beta: integers when ``step`` is a whole
    number and so are the bounds (the study's betas), continuous floats when ``step`` is null."""

    low: float = Field(1.0, gt=0)
    high: float = Field(16.0, gt=0)
    step: float | None = Field(1.0, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> BetaRangeParams:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.step is not None:
            raise ValueError("a log-scaled range takes no step (set step: null)")
        return self


class SearchSpaceParams(Section):
    """What a TPE/random trial varies. A categorical list with one value is fixed; an empty
    ``kl_warmup_steps`` keeps ``nvae.model.kl_warmup_steps``."""

    beta: BetaRangeParams = BetaRangeParams()
    stem_channels: tuple[int, ...] = Field((4, 8, 16, 32, 64), min_length=1)
    kl_warmup_steps: tuple[int, ...] = ()


class SearchGridParams(Section):
    """``sampler: grid``: every combination is one trial. ``beta`` lists the values of every
    scale, so 3 values over 3 scales make the study's 27-point grid (see README, Search)."""

    beta: tuple[float, ...] = Field((8.0, 10.0, 11.0), min_length=1)
    stem_channels: tuple[int, ...] = Field((4,), min_length=1)
    kl_warmup_steps: tuple[int, ...] = ()


SearchTarget = Literal[tuple(SEARCH_TARGETS)]  # type: ignore[valid-type]


class SearchParams(Section):
    """The Optuna study over the NVAE's per-scale beta and stem width (``seglab search nvae``).

    ``target`` picks the data: ``gt`` reconstructs ground-truth masks, ``corrector`` maps ACDCSeg
    predictions to ground truth, ``context`` maps 3-gram predictions to ground truth. ``storage``
    is a SQLite URL (one process), a journal file path (several processes on one machine) or a
    PostgreSQL URL (several machines); relative paths resolve against the project. A study is
    resumed when its name exists; ``study_name`` null derives the name from the target and a
    fingerprint of everything that changes what a trial measures, so a changed search starts a
    new study and an unchanged one continues. ``n_trials`` is the study's total of finished
    (complete or pruned) trials, however many workers share it. ``enqueue`` lists per target the
    known good settings (NVAE overlays) run first by TPE/random (the grid contains its own).
    ``trainer`` null trains every trial like ``nvae.trainer``; ``model`` overrides ``nvae.model``
    for every trial (e.g. warm-ups that fit a short trial's budget; the best-settings overlay
    carries only the searched values). A worker that dies is detected by
    its missing heartbeat after ``grace_period`` seconds (null: twice the interval) and its trial
    retried up to ``max_retry`` times.
    """

    target: SearchTarget = "gt"
    storage: str = "sqlite:///optuna.db"
    study_name: str | None = None
    sampler: Literal["tpe", "grid", "random"] = "tpe"
    seed: int = 0
    n_trials: int = Field(20, ge=1)
    workers: int = Field(1, ge=1)
    multi_objective: bool = False  # maximise val Dice and anatomical validity (Pareto front)
    pruning: bool = True  # median pruner on per-epoch val Dice (single objective only)
    pruner_startup_trials: int = Field(2, ge=0)
    pruner_warmup_epochs: int = Field(1, ge=0)
    space: SearchSpaceParams = SearchSpaceParams()
    grid: SearchGridParams = SearchGridParams()
    enqueue: dict[SearchTarget, tuple[dict[str, Any], ...]] = {
        "gt": ({"beta": (8, 10, 11), "stem_channels": 4},),
        "context": ({"beta": (1, 1, 5), "stem_channels": 4},),
    }
    trainer: TrainerParams | None = None
    model: dict[str, Any] = {}  # overrides of nvae.model for every trial (validated with it)
    heartbeat_interval: int = Field(60, ge=1)
    grace_period: int | None = Field(None, ge=1)
    max_retry: int = Field(3, ge=0)
    register_best: bool = True  # the best trial's model: a new registered version, challenger
    best: str = "search/best_nvae.yaml"  # the best NVAE settings, an overlay of params.yaml
    summary: str = "metrics/search/nvae.json"  # study, best trial, counts, Pareto front
    plots: str = "plots/search"  # optimisation history, importances, parallel coordinates
    work: str = "data/work/search"  # per-trial checkpoints while the study runs


class CorrectorParams(Section):
    """One corrector: an NVAE from a segmenter's predicted mask (``nvae``, 4 input channels) or
    its 3-gram context (``context``, 12) to the ground truth. ``init_from_nvae`` starts the
    weights from the NVAE trained on ground-truth masks (``nvae.models``) where the shapes fit
    (the stem of a 12-channel input never does, so it stays random)."""

    model: NvaeParams = NvaeParams()
    trainer: TrainerParams = TrainerParams()
    init_from_nvae: bool = True


class GateParams(Section):
    """The gated correction keeps the segmenter's mask unless the corrector earns the change:
    its output is anatomically valid where the input was not (``validity``), or the input looks
    implausible to the NVAE of ground-truth masks: the Dice between the input and its
    reconstruction is below ``plausibility_below`` (null: this test is off)."""

    validity: bool = True
    plausibility_below: float | None = Field(0.8, ge=0, le=1)

    @property
    def name(self) -> str:
        """``validity``, ``plausibility_below_0.8``, ``validity_or_plausibility_below_0.8``
        (``nothing`` when both tests are off): a key of its figures, an MLflow tag."""
        tests = (["validity"] if self.validity else []) + (
            [f"plausibility_below_{self.plausibility_below:g}"]
            if self.plausibility_below is not None
            else []
        )
        return "_or_".join(tests) or "nothing"


class CorrectorsParams(Section, NamedOutputs):
    """The correction study's correctors (DVC stage ``train_corrector@<variant>``, MLflow
    experiment ``acdc-correctors``, registered as ``acdc-nvae-corrector`` and
    ``acdc-nvae-context``). Each is trained on ACDCSeg's train split, selected on val, and
    applied to every test row; ``<predictions>/<variant>.npz`` holds the corrected and gated
    test masks with the per-slice plausibility scores the report reads."""

    # One section per row of seglab.variants.CORRECTORS, under the row's name (``nvae``,
    # ``context``): validated as CorrectorParams, the row's defaults where absent. A name that is
    # no row is refused like any unknown key.
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, CorrectorParams] = Field(init=False)

    variants: tuple[str, ...] = ("nvae", "context")
    # auto: each corrector's gate is chosen after training on ACDCSeg's validation rows
    # (seglab.evaluation.gate_choice: the most valid gate costing at most gate_tolerance of the
    # input's validation Dice, "nothing" when none earns a change) and travels with the
    # corrector; a mapping fixes one gate.
    gate: Literal["auto"] | GateParams = "auto"
    gate_tolerance: float = Field(0.002, ge=0, le=1)
    log_every_n_steps: int = Field(10, ge=1)
    figure_rows: int = Field(6, ge=1)
    models: str = "models/correctors"  # <variant>.ckpt: the lowest validation loss
    metrics: str = "metrics/correctors"  # <variant>.json: test figures, timings, run, version
    predictions: str = "data/corrections"  # <variant>.npz: corrected + gated test masks, scores
    work: str = "data/work/correctors"  # checkpoints of an unfinished training (resumed)

    def gate_for(self, chosen: GateParams | None) -> GateParams:
        """The gate to apply with a corrector whose training chose ``chosen`` (None: it chose
        none, e.g. trained before the choice existed): a fixed ``gate`` wins, auto takes the
        corrector's, else the default gate."""
        if isinstance(self.gate, GateParams):
            return self.gate
        return chosen or GateParams()

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        unknown = set(data) - set(cls.model_fields) - set(CORRECTORS)
        if unknown:
            raise ValueError(
                f"unknown key(s) {sorted(unknown)}: correctors holds a section per variant of "
                f"seglab.variants.CORRECTORS ({', '.join(CORRECTORS)}) besides "
                f"{', '.join(cls.model_fields)}"
            )
        defaults = {
            v.name: {"model": {"in_channels": v.in_channels, **v.model_defaults}}
            for v in CORRECTORS.values()
            if v.name not in data
        }
        return {**defaults, **data}

    @field_validator("variants")
    @classmethod
    def _known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in CORRECTORS]
        if unknown:
            raise ValueError(
                f"unknown corrector variant(s) {unknown} (known: {', '.join(CORRECTORS)})"
            )
        return names

    def variant(self, name: str) -> CorrectorParams:
        """The section of corrector ``name`` (a row of ``seglab.variants.CORRECTORS``)."""
        return (self.model_extra or {})[name]

    @model_validator(mode="after")
    def _channels(self) -> CorrectorsParams:
        # A partial `context.model` falls back to NvaeParams' defaults (4 channels), not to this
        # section's 12: say so instead of failing later on the data's shape.
        for variant in CORRECTORS.values():
            got, channels = self.variant(variant.name).model.in_channels, variant.in_channels
            if got != channels:
                raise ValueError(
                    f"correctors.{variant.name}.model.in_channels must be {channels}, got {got}"
                )
        return self


class CorrectionReportParams(Section):
    """The correction study's report (DVC stage ``correction_report``). A slice counts as
    improved (worsened) when its Dice rises (falls) by more than ``changed``; ``large`` is the
    study's "changed by more than 0.3". Quality control ranks slices by the NVAE's
    plausibility score and reports the AUROC for finding slices whose true Dice is below
    ``bad_dice``."""

    changed: float = Field(0.01, ge=0)
    large: float = Field(0.3, gt=0)
    bad_dice: float = Field(0.7, gt=0, le=1)
    gallery: int = Field(6, ge=1)  # most improved / most worsened slices shown
    out: str = "reports/correction"  # report.md, tables (csv) and figures (png)
    metrics: str = "metrics/correction.json"  # the summary `dvc metrics diff` compares
    plots: str = "plots/correction"  # csv data of the DVC plots


class CardiacParams(Section):
    """Root of params.yaml (the cardiac study). Later stages add their sections here."""

    profile: str = "quick"  # quick, or a key of profiles (checked by apply_profile)
    profiles: dict[str, dict[str, Any]] = {}
    acdc: AcdcDataParams = AcdcDataParams()
    tracking: TrackingParams = TrackingParams()
    segmenters: SegmentersParams = SegmentersParams()
    acdcseg: AcdcSegParams = AcdcSegParams()
    nvae: NvaeStageParams = NvaeStageParams()
    search: SearchParams = SearchParams()
    correctors: CorrectorsParams = CorrectorsParams()
    correction: CorrectionReportParams = CorrectionReportParams()
    promotion: PromotionParams = PromotionParams()

    @model_validator(mode="after")
    def _search_model(self) -> CardiacParams:
        try:  # an unknown or invalid override is an error at load, not mid-search
            self.search_base()
        except ValidationError as exc:
            bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"search.model does not fit nvae.model ({bad})") from None
        return self

    def search_base(self) -> NvaeParams:
        """``nvae.model`` with ``search.model``'s overrides: what every search trial starts from."""
        if not self.search.model:
            return self.nvae.model
        merged = merge_mappings(self.nvae.model.model_dump(), self.search.model)
        return NvaeParams.model_validate(merged)


class LggPrepareParams(Section):
    size: int = Field(256, ge=16)
    split: SplitParams = SplitParams()


class LggDataParams(Section):
    """``raw`` is the Kaggle zip as downloaded or an extracted ``kaggle_3m`` folder."""

    raw: str = "data/phantom/lgg"
    prepared: str = "data/prepared/lgg"
    phantom: PhantomParams = PhantomParams(patients=6)
    prepare: LggPrepareParams = LggPrepareParams()


LggDecoder = Literal["unet", "linknet", "fpn", "pspnet", "deeplabv3"]
#: The comparison of issue 9: five decoders on ResNet-18, and Unet on ResNet-101.
LGG_ARCHS: tuple[str, ...] = (
    "unet-resnet18",
    "linknet-resnet18",
    "fpn-resnet18",
    "pspnet-resnet18",
    "deeplabv3-resnet18",
    "unet-resnet101",
)


def split_arch_name(name: str) -> tuple[str, str]:
    """``unet-resnet18`` -> ``("unet", "resnet18")``: a known decoder, then any encoder name."""
    decoder, sep, encoder = name.partition("-")
    if not sep or not encoder or decoder not in get_args(LggDecoder):
        raise ConfigError(
            f"'{name}' is not <decoder>-<encoder> with a decoder among "
            f"{', '.join(get_args(LggDecoder))} (e.g. unet-resnet18)"
        )
    return decoder, encoder


class LggTrainParams(RecipeParams):
    """How every architecture is trained: smp network, the shared ``SegmentationModule`` in
    sigmoid mode (Dice + BCE) with the recipe's settings. Defaults are the original
    comparison's (Adam at 1e-4, batch 16, 30 epochs, early stopping after 5 epochs without a
    better validation IoU).

    ``encoder_weights`` null starts every encoder from random weights; ``imagenet`` loads the
    encoder's entry in ``weights_files`` (encoder name -> local state_dict file, e.g.
    ``resnet18: weights/resnet18-f37072fd.pth``). Nothing is downloaded: an encoder without a
    file, or a file that is missing or does not fit, is an error.
    """

    lr: float = Field(1e-4, gt=0)
    encoder_weights: Literal["imagenet"] | None = None
    weights_files: dict[str, str] = {}
    augment: AugmentParams = AugmentParams(enabled=False)
    trainer: TrainerParams = TrainerParams(max_epochs=30, batch_size=16, early_stopping_patience=5)


class LggArchsParams(Section, NamedOutputs):
    """The architecture comparison (DVC stages ``train@<name>`` and ``compare``, MLflow
    experiment ``lgg-architectures``, each registered as ``lgg-<name>``)."""

    names: tuple[str, ...] = LGG_ARCHS
    train: LggTrainParams = LggTrainParams()
    models: str = "models/lgg"  # <name>.ckpt: the best validation IoU
    metrics: str = "metrics/lgg"  # <name>.json: test figures, time, size, speed
    report: str = "reports/lgg"  # comparison table (md, csv) and figures
    work: str = "data/work/lgg"  # checkpoints of an unfinished training (resumed), then removed

    @field_validator("names")
    @classmethod
    def _names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(names)) != len(names):
            raise ValueError(f"an architecture is listed twice: {list(names)}")
        for name in names:
            try:
                split_arch_name(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return names


class BrainParams(Section):
    """Root of pipelines/lgg/params.yaml (the brain study)."""

    profile: str = "quick"  # quick, or a key of profiles (checked by apply_profile)
    profiles: dict[str, dict[str, Any]] = {}
    lgg: LggDataParams = LggDataParams()
    tracking: TrackingParams = TrackingParams()
    architectures: LggArchsParams = LggArchsParams()
    promotion: PromotionParams = PromotionParams()


class TrackingSection(Section):
    """Only the ``tracking`` and ``promotion`` sections of either study's params file: the
    registry, server and run-comparison commands serve the whole project, so they accept either
    file and leave the study sections to the study's own model."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tracking: TrackingParams = TrackingParams()
    promotion: PromotionParams = PromotionParams()


P = TypeVar("P", bound=Section)


def load_params(path: str | Path, model: type[P], overlays: Sequence[str | Path] = ()) -> P:
    """Read and validate a params file; every problem is reported with its key path.

    Each of ``overlays`` (e.g. ``search/best_nvae.yaml``, the settings a search found) is a
    mapping merged, in order, onto the params after the profile is applied, so a stage can take
    a search's result without anyone editing params.yaml. An overlay can only set keys the
    params know (unknown keys fail validation like any other) and cannot choose the profile.
    """
    path = Path(path)
    raw = _read_mapping(path, "params file")
    try:
        merged = apply_profile(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    for overlay in map(Path, overlays):
        values = _read_mapping(overlay, "overlay")
        if {"profile", "profiles"} & values.keys():
            raise ConfigError(f"{overlay}: an overlay cannot set profile or profiles")
        merged = merge_mappings(merged, values)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        source = f"{path} with overlays {', '.join(map(str, overlays))}" if overlays else path
        raise ConfigError(f"{source}: {problems}") from exc


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def apply_profile(raw: dict[str, Any]) -> dict[str, Any]:
    """Overlay ``profiles[profile]`` onto the params, so one file holds both scales.

    The values written at the top level are the quick profile (runs anywhere on a CPU);
    ``profiles.full`` holds what differs at the study's scale. ``profile: full`` applies it.
    """
    profile = raw.get("profile", "quick")
    profiles = raw.get("profiles") or {}
    if profile != "quick" and profile not in profiles:
        raise ValueError(f"profile '{profile}' has no entry under 'profiles'")
    return merge_mappings(raw, profiles.get(profile) or {})


def merge_mappings(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base``, nested mappings key by key (how a profile,
    an overlay or a benchmark's shortening applies to params)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
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
