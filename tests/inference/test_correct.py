"""`seglab correct` on real ACDC volumes and generated edge cases, with tiny random correctors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lightning as L
import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from seglab.cli import main
from seglab.config import CardiacParams, GateParams, NvaeParams, TrackingParams
from seglab.errors import DataError, SeglabError
from seglab.inference.correct import QC_COLUMNS, correct_volume, render_summary
from seglab.inference.nvae import NvaeReconstructor
from seglab.tracking import runs, tracked_run
from seglab.tracking.models import log_and_register
from seglab.training.nvae_module import NvaeModule

SIZE = 64
PATIENT, FRAME = "patient002", 1  # 1.37 mm pixels: a resampled, lossy geometry


def tiny_corrector(in_channels: int, seed: int = 0) -> NvaeModule:
    torch.manual_seed(seed)
    params = NvaeParams(
        in_channels=in_channels, stem_channels=2, groups_per_scale=(1, 1, 1), latent_channels=4
    )
    return NvaeModule(params, SIZE).eval()


def save_checkpoint(module: NvaeModule, path: Path, **stored: object) -> Path:
    """What the training stages keep of their best epoch (weights and hyper-parameters, with
    ``stored`` choices made after training, e.g. the gate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {**module.hparams, **stored},
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


def cardiac_params(**sections: object) -> CardiacParams:
    return CardiacParams.model_validate(
        {"acdc": {"prepare": {"size": SIZE, "fov_mm": 200.0}}, **sections}
    )


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("correctors")
    return {ch: save_checkpoint(tiny_corrector(ch), folder / f"c{ch}.ckpt") for ch in (4, 12)}


@pytest.fixture(scope="module")
def real(acdc_real: Path) -> tuple[Path, Path]:
    folder = acdc_real / "database" / "training" / PATIENT
    stem = f"{PATIENT}_frame{FRAME:02d}"
    return folder / f"{stem}_gt.nii.gz", folder / f"{stem}.nii.gz"


def write_nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...] = (1.5, 1.5, 8.0)) -> Path:
    nii = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))  # an ACDC-like 1 mm sform
    nii.header.set_zooms((*zooms, *(1.0,) * data.ndim)[: data.ndim])
    nib.save(nii, path)
    return path


def heart_volume(shape: tuple[int, int, int] = (80, 72, 5)) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    dist = np.hypot(gx - 40, gy - 36)
    disc = np.where(dist <= 8, 3, np.where(dist <= 12, 2, 0)).astype(np.uint8)
    disc[(gx - 40 > 10) & (gx - 40 < 22) & (abs(gy - 36) < 8)] = 1
    return np.repeat(disc[:, :, None], shape[2], axis=2)


def assert_same_geometry(out: Path, seg: Path) -> np.ndarray:
    before, after = nib.load(seg), nib.load(out)
    assert after.shape == before.shape
    np.testing.assert_array_equal(after.affine, before.affine)
    np.testing.assert_array_equal(after.get_qform(), before.get_qform())
    assert after.header.get_zooms() == before.header.get_zooms()
    assert after.get_data_dtype() == before.get_data_dtype()
    data = np.asarray(after.dataobj)
    assert set(np.unique(data).tolist()) <= {0, 1, 2, 3}
    return data


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- real ACDC volumes


@pytest.mark.realdata
@pytest.mark.parametrize("channels", [4, 12])
def test_corrects_a_real_volume_in_its_own_geometry(
    real: tuple[Path, Path], checkpoints: dict[int, Path], tmp_path: Path, channels: int
) -> None:
    seg, image = real
    out = tmp_path / "seg_corrected.nii.gz"

    summary = correct_volume(
        seg, image, out, model=str(checkpoints[channels]), params=cardiac_params(), root=tmp_path
    )

    corrected = assert_same_geometry(out, seg)
    slices = nib.load(seg).shape[2]
    assert summary.in_channels == channels and summary.slices == slices and not summary.gated
    assert summary.qc == tmp_path / "seg_corrected.qc.csv"
    qc = pd.read_csv(summary.qc)
    assert tuple(qc.columns) == QC_COLUMNS and list(qc["slice"]) == list(range(slices))
    assert qc["plausibility"].isna().all()  # no NVAE of ground-truth masks under root
    assert qc["agreement"].between(0, 1).all() and qc["taken"].all()
    assert summary.changed == int((qc["changed_voxels"] > 0).sum())
    original = np.asarray(nib.load(seg).dataobj)
    assert (corrected != original).sum() == qc["changed_voxels"].sum()
    assert summary.valid_before == qc["valid_before"].sum()
    text = render_summary(summary)
    assert str(checkpoints[channels]) in text and f"{channels} input channels" in text


def background_nvae(path: Path) -> Path:
    """An "NVAE of ground-truth masks" that reconstructs every mask as background: it finds
    an empty slice perfectly plausible (1) and any slice with a heart implausible (0)."""
    module = tiny_corrector(4, seed=1)
    head = module.model.head[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))
    return save_checkpoint(module, path)


@pytest.mark.realdata
def test_gated_correction_takes_only_what_the_gate_allows(
    real: tuple[Path, Path], checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    real_seg, image = real
    nii = nib.load(real_seg)
    labels = np.asarray(nii.dataobj).copy()
    labels[:, :, 0] = 0  # an empty basal slice: plausible
    seg = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, nii.affine, nii.header), seg)
    background_nvae(tmp_path / "models/nvae/nvae.ckpt")
    params = cardiac_params(nvae={"models": "models/nvae"})
    out = tmp_path / "gated.nii"

    summary = correct_volume(
        seg, image, out, model=str(checkpoints[4]), params=params, root=tmp_path, gated=True
    )

    assert summary.gated and summary.qc == tmp_path / "gated.qc.csv"
    qc = pd.read_csv(summary.qc)
    assert list(qc["plausibility"]) == [1.0] + [0.0] * (len(qc) - 1)
    assert summary.plausibility == pytest.approx(1 / len(qc))
    gate = GateParams()  # the default: the checkpoint stores none
    expected = (qc["valid_corrected"] & ~qc["valid_before"]) | (
        qc["plausibility"] < gate.plausibility_below
    )
    assert list(qc["taken"]) == list(expected) and summary.taken == int(expected.sum())
    assert qc["taken"][1:].all() and qc["valid_before"][0]  # the empty slice is valid: kept
    assert not qc["taken"][0]
    corrected = assert_same_geometry(out, seg)
    assert not corrected[:, :, 0].any()
    assert list(qc["valid_after"]) == list(
        np.where(qc["taken"], qc["valid_corrected"], qc["valid_before"])
    )


@pytest.mark.realdata
def test_the_gate_chosen_in_training_travels_with_the_corrector_unless_params_fix_one(
    real: tuple[Path, Path], tmp_path: Path
) -> None:
    real_seg, image = real
    background_nvae(tmp_path / "models/nvae/nvae.ckpt")  # every input implausible but empty ones
    validity_only = GateParams(plausibility_below=None)
    stored = save_checkpoint(
        tiny_corrector(4), tmp_path / "c4.ckpt", gate=validity_only.model_dump(mode="json")
    )
    auto = cardiac_params(nvae={"models": "models/nvae"})
    summary = correct_volume(
        real_seg, image, tmp_path / "a.nii.gz", model=str(stored), params=auto, root=tmp_path,
        gated=True,
    )  # fmt: skip
    qc = pd.read_csv(summary.qc)
    earned = qc["valid_corrected"] & ~qc["valid_before"] & ~qc["emptied"]
    assert list(qc["taken"]) == list(earned)  # validity alone: plausibility took nothing
    assert summary.taken < (qc["plausibility"] < 0.8).sum()

    fixed = cardiac_params(
        nvae={"models": "models/nvae"},
        correctors={"gate": {"validity": False, "plausibility_below": 0.8}},
    )
    summary = correct_volume(
        real_seg, image, tmp_path / "f.nii.gz", model=str(stored), params=fixed, root=tmp_path,
        gated=True,
    )  # fmt: skip
    qc = pd.read_csv(summary.qc)
    assert list(qc["taken"]) == list((qc["plausibility"] < 0.8) & ~qc["emptied"])


@pytest.mark.realdata
def test_a_gate_that_takes_nothing_gives_the_input_back_exactly(
    real: tuple[Path, Path], checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    seg, image = real
    params = cardiac_params(correctors={"gate": {"validity": False, "plausibility_below": None}})
    out = tmp_path / "same.nii.gz"

    summary = correct_volume(
        seg, image, out, model=str(checkpoints[12]), params=params, root=tmp_path, gated=True
    )

    assert summary.taken == 0 and summary.changed == 0
    assert summary.valid_after == summary.valid_before
    np.testing.assert_array_equal(assert_same_geometry(out, seg), np.asarray(nib.load(seg).dataobj))


@pytest.mark.realdata
def test_gating_by_plausibility_needs_the_nvae_of_ground_truth_masks(
    real: tuple[Path, Path], checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    seg, image = real
    out = tmp_path / "out.nii.gz"
    with pytest.raises(SeglabError, match=r"nvae\.ckpt: the gate \(validity_or_plausibility_"):
        correct_volume(
            seg,
            image,
            out,
            model=str(checkpoints[4]),
            params=cardiac_params(),
            root=tmp_path,
            gated=True,
        )
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.realdata
def test_cli_corrects_a_real_volume(
    real: tuple[Path, Path],
    checkpoints: dict[int, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seg, image = real
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"acdc": {"prepare": {"size": SIZE, "fov_mm": 200.0}}})
    )
    monkeypatch.chdir(tmp_path)
    args = ["correct", str(seg), "--image", str(image), "-o", "out/corrected.nii.gz"]

    assert main([*args, "--model", str(checkpoints[4]), "--qc", "qc.csv"]) == 0

    printed = capsys.readouterr().out
    assert "out/corrected.nii.gz" in printed and "4 input channels" in printed
    assert_same_geometry(tmp_path / "out/corrected.nii.gz", seg)
    assert len(pd.read_csv(tmp_path / "qc.csv")) == nib.load(seg).shape[2]

    assert main([*args, "--model", "missing.ckpt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("seglab: error: missing.ckpt: ") and "\n" not in err


# ---------------------------------------------------------------- generated volumes


def test_4d_volume_with_one_time_point_keeps_its_shape(
    checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    labels = heart_volume()[..., None]
    seg = write_nifti(tmp_path / "seg.nii.gz", labels.astype(np.int16), (1.5, 1.5, 8.0, 1.0))
    rng = np.random.default_rng(0)
    image = write_nifti(tmp_path / "img.nii.gz", rng.random(labels.shape).astype(np.float32))

    summary = correct_volume(
        seg,
        image,
        tmp_path / "out.nii.gz",
        model=str(checkpoints[4]),
        params=cardiac_params(),
        root=tmp_path,
    )

    assert summary.slices == labels.shape[2]
    assert assert_same_geometry(tmp_path / "out.nii.gz", seg).shape == labels.shape


def test_volume_without_foreground_is_corrected(
    checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    shape = (60, 50, 3)
    seg = write_nifti(tmp_path / "seg.nii.gz", np.zeros(shape, np.uint8))
    image = write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(1).random(shape))

    summary = correct_volume(
        seg,
        image,
        tmp_path / "out.nii",
        model=str(checkpoints[12]),
        params=cardiac_params(),
        root=tmp_path,
    )

    assert summary.slices == 3
    assert_same_geometry(tmp_path / "out.nii", seg)
    assert len(pd.read_csv(tmp_path / "out.qc.csv")) == 3


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, Path]:
    labels = heart_volume()
    seg = write_nifti(tmp_path / "seg.nii.gz", labels)
    image = write_nifti(tmp_path / "img.nii.gz", np.random.default_rng(2).random(labels.shape))
    return seg, image


def test_a_correction_that_erases_the_heart_is_never_taken_nor_valid(
    generated: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The quick profile's collapsed NVAE as both corrector and plausibility scorer: every
    correction is all background, and a perfect heart scores plausibility 0 < 0.8."""
    seg, image = generated
    corrector = background_nvae(tmp_path / "collapsed.ckpt")
    background_nvae(tmp_path / "models/nvae/nvae.ckpt")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "acdc": {"prepare": {"size": SIZE, "fov_mm": 200.0}},
                "nvae": {"models": "models/nvae"},
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    args = ["correct", str(seg), "--image", str(image), "--model", str(corrector)]

    assert main([*args, "-o", "gated.nii.gz", "--gated"]) == 0

    printed = capsys.readouterr().out
    qc = pd.read_csv(tmp_path / "gated.qc.csv")
    slices = len(qc)
    assert (qc["plausibility"] == 0).all() and qc["emptied"].all()
    assert not qc["taken"].any() and not qc["valid_corrected"].any()
    np.testing.assert_array_equal(
        assert_same_geometry(tmp_path / "gated.nii.gz", seg), nib.load(seg).dataobj
    )
    names = ", ".join(str(z) for z in range(slices))
    assert f"erased the heart of {slices} slices ({names}): not taken" in printed
    assert f"{qc['valid_before'].sum()}/{slices} after" in printed

    assert main([*args, "-o", "plain.nii.gz"]) == 0

    printed = capsys.readouterr().out
    plain = pd.read_csv(tmp_path / "plain.qc.csv")
    assert plain["taken"].all() and not plain["valid_after"].any()
    assert f"0/{slices} after" in printed
    assert f"erased the heart of {slices} slices ({names}): written as corrected" in printed
    assert not assert_same_geometry(tmp_path / "plain.nii.gz", seg).any()


def bad_input_cases(tmp_path: Path, seg: Path, image: Path) -> dict[str, tuple[Path, Path, str]]:
    """name -> (seg, image, expected message after 'PATH: ')."""
    labels = heart_volume()
    five = labels.copy()
    five[0, 0, 0], five[1, 0, 0] = 5, 7
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(seg.read_bytes()[:200])
    return {
        "labels outside 0..3": (
            write_nifti(tmp_path / "five.nii.gz", five),
            image,
            "label values must be 0..3 (background, RV, MYO, LV), found 5, 7",
        ),
        "fractional labels": (
            write_nifti(tmp_path / "half.nii.gz", labels.astype(np.float32) / 2),
            image,
            "label values must be 0..3 (background, RV, MYO, LV), found 0.5, 1.5",
        ),
        "shape mismatch": (
            seg,
            write_nifti(tmp_path / "small.nii.gz", np.zeros((80, 70, 5), np.float32)),
            "image shape (80, 70, 5) differs from the label volume's (80, 72, 5)",
        ),
        "2D label map": (
            write_nifti(tmp_path / "flat.nii.gz", labels[:, :, 0]),
            image,
            "expected a 3D label volume (x, y, z), got shape (80, 72)",
        ),
        "4D with time points": (
            write_nifti(tmp_path / "cine.nii.gz", np.stack([labels, labels], axis=3)),
            image,
            "expected a 3D label volume (x, y, z), got shape (80, 72, 5, 2)",
        ),
        "truncated file": (corrupt, image, "not a readable NIfTI label volume"),
        "missing image": (seg, tmp_path / "nope.nii.gz", "image not found"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "labels outside 0..3",
        "fractional labels",
        "shape mismatch",
        "2D label map",
        "4D with time points",
        "truncated file",
        "missing image",
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(
    generated: tuple[Path, Path], checkpoints: dict[int, Path], tmp_path: Path, case: str
) -> None:
    seg, image, problem = bad_input_cases(tmp_path, *generated)[case]
    out = tmp_path / "out" / "corrected.nii.gz"
    bad = image if case in ("shape mismatch", "missing image") else seg

    with pytest.raises(DataError) as caught:
        correct_volume(
            seg, image, out, model=str(checkpoints[4]), params=cardiac_params(), root=tmp_path
        )

    message = str(caught.value)
    assert message.startswith(f"{bad}: {problem}") and "\n" not in message
    assert not out.parent.exists() and not leftovers(tmp_path)


def test_missing_checkpoint_and_wrong_slice_size_are_refused(
    generated: tuple[Path, Path], checkpoints: dict[int, Path], tmp_path: Path
) -> None:
    seg, image = generated
    out = tmp_path / "out.nii.gz"
    with pytest.raises(DataError, match=r"nope\.ckpt: NVAE checkpoint not found"):
        correct_volume(
            seg,
            image,
            out,
            model=str(tmp_path / "nope.ckpt"),
            params=cardiac_params(),
            root=tmp_path,
        )
    other = CardiacParams.model_validate({"acdc": {"prepare": {"size": 96}}})
    with pytest.raises(SeglabError, match="takes 64x64 slices but acdc.prepare.size is 96"):
        correct_volume(seg, image, out, model=str(checkpoints[4]), params=other, root=tmp_path)
    with pytest.raises(SeglabError, match=r"out\.mha: the corrected volume must be a \.nii"):
        correct_volume(
            seg,
            image,
            tmp_path / "out.mha",
            model=str(checkpoints[4]),
            params=cardiac_params(),
            root=tmp_path,
        )
    assert not out.exists() and not leftovers(tmp_path)


# ---------------------------------------------------------------- loading from the registry


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackingParams]:
    """A project-local SQLite store, away from any launcher or the checkout's git."""
    for name in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runs, "_launched", None)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    yield TrackingParams(uri="sqlite:///mlflow.db", artifacts="mlartifacts")
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_unknown_registered_model_is_a_clear_error(
    generated: tuple[Path, Path], isolated: TrackingParams, tmp_path: Path
) -> None:
    seg, image = generated
    out = tmp_path / "out.nii.gz"
    with pytest.raises(SeglabError) as caught:
        correct_volume(
            seg,
            image,
            out,
            model="models:/acdc-nvae-corrector@champion",
            params=cardiac_params(tracking=isolated.model_dump()),
            root=tmp_path,
        )
    message = str(caught.value)
    assert message.startswith("models:/acdc-nvae-corrector@champion: registered model ")
    assert "'acdc-nvae-corrector' not found" in message and "mlflow.db" in message
    assert "\n" not in message and not out.exists()


@pytest.mark.slow  # exporting the model for the registry takes ~40 s on a CPU
@pytest.mark.realdata
def test_corrects_through_the_champion_alias_like_the_checkpoint(
    real: tuple[Path, Path],
    checkpoints: dict[int, Path],
    isolated: TrackingParams,
    tmp_path: Path,
) -> None:
    seg, image = real
    module = NvaeModule.load_from_checkpoint(checkpoints[4], map_location="cpu").eval()
    example = np.zeros((2, 4, SIZE, SIZE), np.float32)
    example[:, 0] = 1.0
    with tracked_run(isolated, "acdc-correctors", "tiny", root=tmp_path):
        version = log_and_register(NvaeReconstructor(module.model), "acdc-nvae-corrector", example)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.set_registered_model_alias("acdc-nvae-corrector", "champion", version.version)
    params = cardiac_params(tracking=isolated.model_dump())

    summary = correct_volume(
        seg,
        image,
        tmp_path / "registry.nii.gz",
        model="models:/acdc-nvae-corrector@champion",
        params=params,
        root=tmp_path,
    )
    direct = correct_volume(
        seg,
        image,
        tmp_path / "checkpoint.nii.gz",
        model=str(checkpoints[4]),
        params=params,
        root=tmp_path,
    )

    assert summary.model == f"models:/acdc-nvae-corrector@champion (version {version.version})"
    assert summary.in_channels == 4
    via_registry = assert_same_geometry(tmp_path / "registry.nii.gz", seg)
    np.testing.assert_array_equal(via_registry, nib.load(tmp_path / "checkpoint.nii.gz").dataobj)
    assert summary.agreement == pytest.approx(direct.agreement)
