from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from seglab.config import (
    BrainParams,
    CardiacParams,
    NamedOutputs,
    NvaeParams,
    SegmentersParams,
    flatten,
    load_params,
)
from seglab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_files_validate() -> None:
    cardiac = load_params(ROOT / "params.yaml", CardiacParams)
    assert cardiac.acdc.prepare.size == 128
    brain = load_params(ROOT / "pipelines/lgg/params.yaml", BrainParams)
    assert brain.lgg.raw


def _declared_files(pipeline: Path, stage: str, section: str, fields: NamedOutputs) -> set[str]:
    """The files a DVC ``foreach`` stage declares (outs, metrics, plots), for item ``x``."""
    declared = yaml.safe_load(pipeline.read_text())["stages"][stage]["do"]
    files = set()
    for kind in ("outs", "metrics", "plots"):
        for entry in declared.get(kind, []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            for field in ("models", "metrics"):
                path = path.replace(f"${{{section}.{field}}}", getattr(fields, field))
            files.add(path.replace("${item}", "x"))
    return files


@pytest.mark.parametrize(
    ("pipeline", "stage", "section"),
    [
        ("dvc.yaml", "train_segmenter", "segmenters"),
        ("dvc.yaml", "train_corrector", "correctors"),
        ("pipelines/lgg/dvc.yaml", "train", "architectures"),
    ],
)
def test_named_outputs_are_files_the_dvc_stage_declares(
    pipeline: str, stage: str, section: str
) -> None:
    """The paths the stages write and the benchmarks read are the ones DVC tracks."""
    model = CardiacParams if pipeline == "dvc.yaml" else BrainParams
    params = load_params((ROOT / pipeline).with_name("params.yaml"), model)
    outputs = getattr(params, section)
    declared = _declared_files(ROOT / pipeline, stage, section, outputs)
    named = {outputs.checkpoint_path("x", Path()), outputs.metrics_path("x", Path())}
    if stage != "train_corrector":  # the correctors keep no per-epoch curves
        named.add(outputs.curves_path("x", Path()))
    assert {str(p) for p in named} <= declared


def test_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("acdc:\n  prepare:\n    sise: 64\n")
    with pytest.raises(ConfigError, match=r"params.yaml: acdc.prepare.sise: Extra inputs"):
        load_params(f, CardiacParams)


def test_bad_value_and_bad_yaml(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("acdc:\n  prepare:\n    crop: magic\n")
    with pytest.raises(ConfigError, match="acdc.prepare.crop"):
        load_params(f, CardiacParams)
    f.write_text("acdc: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(f, CardiacParams)
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml", CardiacParams)


def test_full_profile_overlays_the_quick_values(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text(
        "profile: full\nacdc:\n  prepare:\n    size: 64\n    fov_mm: 180\n"
        "profiles:\n  full:\n    acdc:\n      prepare:\n        size: 128\n"
    )
    params = load_params(f, CardiacParams)
    assert params.acdc.prepare.size == 128 and params.acdc.prepare.fov_mm == 180
    f.write_text("profile: full\n")
    with pytest.raises(ConfigError, match="profile 'full' has no entry"):
        load_params(f, CardiacParams)


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(CardiacParams())
    assert flat["acdc.prepare.split.seed"] == 42
    assert flat["tracking.uri"].startswith("sqlite:///")


def test_overlay_applies_after_the_profile(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text(
        "profile: full\nnvae:\n  model:\n    stem_channels: 2\n    latent_channels: 5\n"
        "profiles:\n  full:\n    nvae:\n      model:\n        stem_channels: 8\n"
        "        beta: [1, 2, 3]\n"
    )
    best = tmp_path / "best.yaml"
    best.write_text("# a search's result\nnvae:\n  model:\n    beta: [8, 10, 11]\n")
    later = tmp_path / "later.yaml"
    later.write_text("nvae:\n  model:\n    stem_channels: 16\n")
    assert load_params(f, CardiacParams).nvae.model.beta == (1.0, 2.0, 3.0)  # the profile's
    model = load_params(f, CardiacParams, overlays=[best]).nvae.model
    # the overlay wins over the profile; keys it does not name keep the profile's or the file's
    assert (model.beta, model.stem_channels, model.latent_channels) == ((8.0, 10.0, 11.0), 8, 5)
    model = load_params(f, CardiacParams, overlays=[best, later]).nvae.model
    assert (model.beta, model.stem_channels) == ((8.0, 10.0, 11.0), 16)  # in order
    empty = tmp_path / "empty.yaml"
    empty.write_text("nvae:\n  model: {}\n")  # a search without a finished trial changes nothing
    assert load_params(f, CardiacParams, overlays=[empty]) == load_params(f, CardiacParams)


def test_bad_overlays_are_named(tmp_path: Path) -> None:
    f = tmp_path / "params.yaml"
    f.write_text("nvae:\n  model:\n    stem_channels: 2\n")
    overlay = tmp_path / "best.yaml"
    with pytest.raises(ConfigError, match=r"best.yaml: overlay not found"):
        load_params(f, CardiacParams, overlays=[overlay])
    overlay.write_text("- beta: [8, 10, 11]\n")
    with pytest.raises(ConfigError, match=r"best.yaml: expected a mapping"):
        load_params(f, CardiacParams, overlays=[overlay])
    overlay.write_text("nvae: {model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"best.yaml: not valid YAML"):
        load_params(f, CardiacParams, overlays=[overlay])
    overlay.write_text("nvae:\n  model:\n    stem_chanels: 8\n")
    with pytest.raises(
        ConfigError, match=r"params.yaml with overlays .*best.yaml: nvae.model.stem_chanels: Extra"
    ):
        load_params(f, CardiacParams, overlays=[overlay])
    overlay.write_text("nvae:\n  model:\n    beta: [8, 10]\n")  # 2 values for 3 scales
    with pytest.raises(ConfigError, match=r"beta has 2 values for 3 scales"):
        load_params(f, CardiacParams, overlays=[overlay])
    overlay.write_text("profile: full\n")
    with pytest.raises(ConfigError, match=r"best.yaml: an overlay cannot set profile"):
        load_params(f, CardiacParams, overlays=[overlay])


def test_the_search_result_overlays_the_project_params() -> None:
    """search/best_nvae.yaml as the search writes it is a valid overlay of params.yaml."""
    best = ROOT / "search/best_nvae.yaml"
    if not best.is_file():
        pytest.skip("no search result in this checkout (run `dvc repro search_nvae`)")
    plain = load_params(ROOT / "params.yaml", CardiacParams)
    overlaid = load_params(ROOT / "params.yaml", CardiacParams, overlays=[best])
    assert overlaid.search == plain.search and overlaid.acdc == plain.acdc
    assert overlaid.nvae.trainer == plain.nvae.trainer
    chosen = yaml.safe_load(best.read_text())["nvae"]["model"]
    expected = NvaeParams.model_validate({**plain.nvae.model.model_dump(), **chosen})
    assert overlaid.nvae.model == expected


def test_every_profile_validates_and_correctors_keep_their_channels(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for profile in ("quick", *raw["profiles"]):
        path = tmp_path / f"{profile}.yaml"
        path.write_text(yaml.safe_dump({**raw, "profile": profile}))
        params = load_params(path, CardiacParams)
        assert params.correctors.nvae.model.in_channels == 4
        assert params.correctors.context.model.in_channels == 12
    # a partial context model would fall back to 4 channels: refused, naming the key
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump({"correctors": {"context": {"model": {"beta": [1, 1, 5]}}}}))
    with pytest.raises(ConfigError, match="correctors.context.model.in_channels must be 12"):
        load_params(path, CardiacParams)


def test_quick_per_network_budgets_do_not_leak_into_the_other_profiles(tmp_path: Path) -> None:
    """A profile merges over the quick values, so a network the quick profile shortens keeps
    that budget elsewhere unless the profile restates it: the study's sizes train the study's
    100 epochs on every batch, and no cpu network is left with a quick budget."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def budgets(profile: str) -> dict[str, tuple[int, float | int]]:
        path = tmp_path / f"{profile}.yaml"
        path.write_text(yaml.safe_dump({**raw, "profile": profile}))
        seg = load_params(path, CardiacParams).segmenters
        return {
            arch: (
                seg.train_for(arch).trainer.max_epochs,
                seg.train_for(arch).trainer.limit_train_batches,
            )
            for arch in seg.archs
        }

    quick = budgets("quick")
    assert set(budgets("full").values()) == {(100, 1.0)}
    for arch, budget in budgets("cpu").items():
        assert budget != quick[arch] and budget[1] == 1.0, arch


def test_search_model_overrides_every_trial_and_is_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("search:\n  model: {kl_warmup_steps: 60, optim: {warmup_steps: 20}}\n")
    params = load_params(path, CardiacParams)
    base = params.search_base()
    assert base.kl_warmup_steps == 60 and base.optim.warmup_steps == 20
    assert base.optim.lr == params.nvae.model.optim.lr  # a nested override keeps the rest
    assert params.nvae.model.kl_warmup_steps != 60  # the NVAE stage itself is untouched
    path.write_text("search:\n  model: {optim: {warmup: 20}}\n")
    with pytest.raises(ConfigError, match=r"search.model does not fit nvae.model \(optim.warmup"):
        load_params(path, CardiacParams)


def test_arch_train_overrides_one_architecture_only() -> None:
    seg = SegmentersParams.model_validate(
        {
            "train": {"lr": 2e-3},
            "arch_train": {"swinunetr": {"lr": 1e-3, "trainer": {"max_epochs": 7}}},
        }
    )
    assert seg.train_for("swinunetr").lr == 1e-3
    assert seg.train_for("swinunetr").trainer.max_epochs == 7
    assert seg.train_for("swinunetr").trainer.batch_size == seg.train.trainer.batch_size
    assert seg.train_for("unet") == seg.train
    with pytest.raises(ValidationError, match="max_epoch"):
        SegmentersParams.model_validate({"arch_train": {"unet": {"trainer": {"max_epoch": 3}}}})
    with pytest.raises(ValidationError, match="arch_train"):
        SegmentersParams.model_validate({"arch_train": {"vnet": {"lr": 1.0}}})
