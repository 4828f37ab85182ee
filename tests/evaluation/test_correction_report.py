"""The correction study's report on generated masks: counts, empty slices, QC, clinical errors,
files written, and bad input; then on rows of the phantom pipeline (prepared ACDC slices)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from seglab.config import AcdcDataParams, AcdcPrepareParams, CorrectionReportParams, SplitParams
from seglab.data.acdcseg import acdcseg_rows
from seglab.data.labels import LV, MYO, RV
from seglab.data.phantom.acdc import write_acdc_phantom
from seglab.data.prepare_acdc import prepare_acdc
from seglab.data.store import concat, load_split
from seglab.evaluation.correction_report import correction_report
from seglab.inference.correction import mask_agreement
from seglab.io import write_json
from seglab.metrics.anatomy import check_slices
from seglab.metrics.overlap import overlap, summarize_overlap

SIZE = 48
SLICES = 5  # per volume; slice 0 lies beyond the apex (empty ground truth)
PARAMS = CorrectionReportParams(gallery=3)


def heart(size: int, radius: float, centre: tuple[float, float], rv: bool = True) -> np.ndarray:
    """[size, size] labels: LV disc in a MYO ring, an RV crescent on its left."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    d = np.hypot(yy - centre[0], xx - centre[1])
    out = np.zeros((size, size), np.uint8)
    if rv:
        out[(np.hypot(yy - centre[0], xx - centre[1] + 1.6 * radius) < 1.6 * radius)] = RV
    out[d < 1.5 * radius] = MYO
    out[d < radius] = LV
    return out


def dataset(patients: int = 2, size: int = SIZE, seed: int = 0) -> dict[str, Any]:
    """Rows of ``patients`` x segmenters a, b x ED/ES x ``SLICES`` slices, with predictions
    shifted by 0..size/5 pixels (so some are bad), a missing RV here and there, and a false
    positive on the empty slice of segmenter a."""
    rng = np.random.default_rng(seed)
    rows, gt, pred = [], [], []
    for p in range(patients):
        for segmenter in ("a", "b"):
            for phase, scale in (("ED", 1.0), ("ES", 0.75)):
                for z in range(SLICES):
                    rows.append(
                        {
                            "patient": f"P{p:02d}",
                            "group": ("NOR", "DCM", "HCM", "MINF", "RV")[p % 5],
                            "phase": phase,
                            "frame": 1 if phase == "ED" else 10,
                            "slice_index": z,
                            "slice_count": SLICES,
                            "spacing_x": 1.5,
                            "spacing_y": 1.5,
                            "thickness": 8.0,
                            "segmenter": segmenter,
                        }
                    )
                    radius = size * 0.1 * scale * (1 - 0.1 * z)
                    truth = (
                        heart(size, radius, (size / 2, size / 2))
                        if z
                        else np.zeros((size, size), np.uint8)
                    )
                    shift = int(rng.integers(0, size // 5 + 1))
                    guess = np.roll(truth, shift, axis=1)
                    if rng.random() < 0.2:
                        guess[guess == RV] = 0
                    if z == 0 and segmenter == "a":
                        guess = heart(size, 2.0, (size / 3, size / 3), rv=False)
                    gt.append(truth)
                    pred.append(guess)
    n = len(rows)
    return {
        "meta": pd.DataFrame(rows),
        "image": rng.random((n, size, size)).astype(np.float32),
        "gt": np.stack(gt),
        "before": np.stack(pred),
    }


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return dataset()


def run(data: dict[str, Any], tmp: Path, after: dict, scores: dict | None = None, **kw: Any):
    return correction_report(
        data["meta"],
        data["image"],
        data["gt"],
        data["before"],
        after,
        scores or {},
        kw.get("params", PARAMS),
        tmp / "report",
        tmp / "plots",
    )


def test_identity_changes_nothing_and_ground_truth_improves_every_wrong_slice(
    data: dict[str, Any], tmp_path: Path
) -> None:
    gt, before = data["gt"], data["before"]
    summary = run(data, tmp_path, {"same": before.copy(), "oracle": gt.copy()})
    n = len(gt)
    same, oracle = summary["same"], summary["oracle"]
    assert (same["unchanged"], same["improved"], same["worsened"]) == (n, 0, 0)
    assert same["delta_mean"] == 0.0 and same["dice_mean"] == summary["before"]["dice_mean"]
    assert oracle["dice_mean"] == oracle["dice_lv"] == oracle["dice_rv"] == 1.0
    # Independent per-slice Dice (same empty-vs-empty convention: 1).
    dsc_before = mask_agreement(before, gt)
    wrong = 1.0 - dsc_before > PARAMS.changed
    assert 0 < wrong.sum() < n
    assert oracle["improved"] == wrong.sum() and oracle["worsened"] == 0
    assert oracle["unchanged"] == n - wrong.sum()
    assert oracle["large_up"] == (1.0 - dsc_before > PARAMS.large).sum()
    assert oracle["anatomical_validity"] == check_slices(gt, (1.5, 1.5)).valid.mean()
    assert summary["before"]["dice_mean"] == pytest.approx(
        summarize_overlap(overlap(before, gt, (1.5, 1.5)))["dice_mean"]
    )
    table = pd.read_csv(tmp_path / "report" / "slices.csv")
    np.testing.assert_allclose(table["dice_before"], dsc_before)
    np.testing.assert_allclose(table["delta_oracle"], 1.0 - dsc_before)
    # The clinical indices of the ground truth itself: no error; the shifted masks: some.
    assert summary["clinical_volumes"] == 4  # 2 patients x 2 segmenters with ED and ES
    assert all(oracle[f"{k}_mae"] == 0.0 for k in ("lv_edv_ml", "lv_ef_pct", "myo_mass_g"))
    assert summary["before"]["rv_edv_ml_mae"] > 0
    json.dumps(summary, allow_nan=False)  # strict JSON as it is


def test_empty_ground_truth_slices_are_counted_apart(data: dict[str, Any], tmp_path: Path) -> None:
    gt, before = data["gt"], data["before"]
    summary = run(data, tmp_path, {"oracle": gt.copy(), "same": before.copy()})
    empty = ~gt.reshape(len(gt), -1).any(axis=1)
    false_positive = empty & before.reshape(len(gt), -1).any(axis=1)
    assert summary["empty_gt_slices"] == empty.sum() == 8
    assert summary["before"]["empty_gt_pred_nonempty"] == false_positive.sum() == 4
    assert summary["oracle"]["empty_gt_pred_nonempty"] == 0
    table = pd.read_csv(tmp_path / "report" / "empty_gt.csv").set_index("method")
    assert table.loc["oracle", "improved"] == 4  # each a full +1: 0 -> 1
    assert table.loc["same", "improved"] == 0 and table.loc["oracle", "pred_empty"] == 8
    assert "Slices with an empty ground truth" in (tmp_path / "report" / "report.md").read_text()


def test_erased_hearts_are_never_valid_nor_made_valid_and_counted_apart(
    data: dict[str, Any], tmp_path: Path
) -> None:
    """The quick profile's collapsed corrector: every output is background. It breaks no
    criterion, yet it repairs nothing, and its clinical errors must not beat the segmenters'."""
    gt = data["gt"]
    heart = gt.reshape(len(gt), -1).any(axis=1)
    before = data["before"].copy()
    before[heart, 1:3, 1:3] = LV  # a stray LV blob: every input with a heart is invalid
    erased = np.zeros_like(gt)
    summary = run({**data, "before": before}, tmp_path, {"erased": erased, "same": before})
    valid_before = check_slices(before, (1.5, 1.5)).valid
    assert not valid_before[heart].any()
    out = summary["erased"]
    assert out["emptied"] == heart.sum() == 32 and summary["before"]["emptied"] == 0
    assert out["anatomical_validity"] == pytest.approx((~heart).mean())  # only empty truths
    assert out["made_valid"] == (~valid_before & ~heart).sum()  # removed false positives only
    assert summary["same"]["emptied"] == 0 and summary["same"]["made_valid"] == 0
    # Clinical indices: every (patient, segmenter) pair erased, none scored, all counted apart.
    assert out["clinical_emptied"] == summary["clinical_volumes"] == 4
    assert summary["before"]["clinical_emptied"] == 0
    assert all(np.isnan(out[f"{k}_mae"]) for k in ("lv_edv_ml", "rv_edv_ml", "myo_mass_g"))
    report = tmp_path / "report"
    clinical = pd.read_csv(report / "clinical.csv")
    assert clinical.groupby("method")["emptied"].all().to_dict() == {
        "before": False,
        "erased": True,
        "same": False,
    }
    headline = pd.read_csv(report / "summary.csv").set_index("method")
    assert headline.loc["erased", "emptied"] == 32
    slices = pd.read_csv(report / "slices.csv")
    np.testing.assert_array_equal(slices["emptied_erased"], heart)
    assert "emptied_volumes" in (report / "report.md").read_text()


def test_a_gated_mix_scores_like_a_fresh_measurement(data: dict[str, Any], tmp_path: Path) -> None:
    """Slices equal to the input are copied from its figures: the result must not differ."""
    gt, before = data["gt"], data["before"]
    mixed = before.copy()
    mixed[::3] = gt[::3]
    summary = run(data, tmp_path, {"nvae-gated": mixed})
    fresh = summarize_overlap(overlap(mixed, gt, (1.5, 1.5)))
    for key in ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "hd95_mean"):
        assert summary["nvae-gated"][key] == pytest.approx(fresh[key], nan_ok=True)
    assert (
        summary["nvae-gated"]["anatomical_validity"] == check_slices(mixed, (1.5, 1.5)).valid.mean()
    )


def test_qc_auroc_perfect_random_and_undefined(tmp_path: Path) -> None:
    data = dataset(patients=12, size=32, seed=1)
    before, gt = data["before"], data["gt"]
    dsc = mask_agreement(before, gt)
    bad = dsc < PARAMS.bad_dice
    assert 30 < bad.sum() < len(bad) - 30
    noise = np.random.default_rng(5).random(len(bad))
    summary = run(data, tmp_path, {}, {"oracle": dsc, "random": noise})
    qc = summary["qc"]
    assert qc["oracle"] == {"auroc": 1.0, "bad_slices": int(bad.sum())}
    # AUROC is the Mann-Whitney U of the suspicion (-score) of bad vs good slices.
    u = mannwhitneyu(-noise[bad], -noise[~bad]).statistic / (bad.sum() * (~bad).sum())
    assert qc["random"]["auroc"] == pytest.approx(u) and abs(u - 0.5) < 0.1
    roc = pd.read_csv(tmp_path / "plots" / "roc.csv")
    assert set(roc["score"]) == {"oracle", "random"}
    assert roc.groupby("score")["tpr"].max().eq(1.0).all()

    perfect = {**data, "before": gt}  # no slice is bad
    summary = run(perfect, tmp_path, {}, {"oracle": dsc})
    assert summary["qc"]["oracle"] == {"auroc": None, "bad_slices": 0}
    assert "only one class" in (tmp_path / "report" / "report.md").read_text()


def test_every_file_is_written(data: dict[str, Any], tmp_path: Path) -> None:
    gt, before = data["gt"], data["before"]
    after = {"nvae": gt.copy(), "context": before.copy()}
    summary = run(data, tmp_path, after, {"plausibility": mask_agreement(before, gt)})
    report, plots = tmp_path / "report", tmp_path / "plots"
    pngs = {p.name for p in report.glob("*.png")}
    assert {"dice_violin.png", "delta_hist.png", "dice_scatter.png", "change_counts.png"} <= pngs
    assert {"roc.png", "gallery_nvae_improved.png", "gallery_context_worsened.png"} <= pngs
    assert all((report / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    for name in ("slices", "summary", "changes", "by_segmenter", "by_group", "by_phase"):
        assert len(pd.read_csv(report / f"{name}.csv")) > 0, name
    assert set(pd.read_csv(report / "by_group.csv")["group"]) == {"NOR", "DCM"}
    assert len(pd.read_csv(report / "criteria.csv")) == 16
    clinical = pd.read_csv(report / "clinical.csv")
    assert set(clinical["method"]) == {"before", "nvae", "context"}
    text = (report / "report.md").read_text()
    assert "0.8973" in text and "0.8964" in text and "0.8577" in text
    assert f"{summary['nvae']['dice_mean']:.4f}" in text
    scatter = pd.read_csv(plots / "dice_scatter.csv")
    assert list(scatter.columns) == ["before", "after", "method"] and len(scatter) == 2 * len(gt)
    hist = pd.read_csv(plots / "delta_hist.csv")
    assert hist.groupby("method")["slices"].sum().eq(len(gt)).all()
    counts = pd.read_csv(plots / "change_counts.csv").set_index(["method", "outcome"])
    assert counts.loc[("context", "unchanged"), "slices"] == len(gt)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    write_json(tmp_path / "metrics.json", summary)
    assert json.loads((tmp_path / "metrics.json").read_text())["nvae"]["improved"] > 0


def test_bad_input_names_the_culprit_and_writes_nothing(
    data: dict[str, Any], tmp_path: Path
) -> None:
    gt = data["gt"]
    with pytest.raises(ValueError, match="nvae-gated: shape"):
        run(data, tmp_path, {"nvae": gt, "nvae-gated": gt[:, :-1]})
    with pytest.raises(ValueError, match="context: labels must lie in 0..3"):
        run(data, tmp_path, {"context": gt + 1})
    with pytest.raises(ValueError, match="score plausibility"):
        run(data, tmp_path, {}, {"plausibility": np.ones(len(gt) - 1)})
    with pytest.raises(ValueError, match="meta has"):
        run({**data, "meta": data["meta"][:-1]}, tmp_path, {})
    with pytest.raises(ValueError, match="before"):
        run(data, tmp_path, {"before": gt})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def phantom_rows(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Prepared 128x128 slices of five phantom patients (one per group), as ACDCSeg rows of two
    'segmenters' whose predictions are the ground truth shifted by 2 and 6 pixels."""
    root = tmp_path_factory.mktemp("correction-phantom")
    write_acdc_phantom(root / "raw", patients=5, seed=0)
    params = AcdcDataParams(
        raw=str(root / "raw"),
        prepared=str(root / "prepared"),
        prepare=AcdcPrepareParams(split=SplitParams(val=0.0, test=0.0)),
    )
    prepare_acdc(params)
    prepared = load_split(root / "prepared" / "train.npz")
    parts = [
        acdcseg_rows(prepared, np.roll(prepared.label, shift, axis=2), name)
        for name, shift in (("unet", 2), ("swinunetr", 6))
    ]
    return concat(parts)


def test_phantom_pipeline_rows(phantom_rows: Any, tmp_path: Path) -> None:
    rows = phantom_rows
    before, gt = rows.extra["pred"], rows.label
    gated = np.where((np.arange(len(gt)) % 2 == 0)[:, None, None], gt, before).astype(np.uint8)
    summary = correction_report(
        rows.meta,
        rows.image,
        gt,
        before,
        {"nvae": gt, "nvae-gated": gated},
        {"plausibility": mask_agreement(before, gt)},
        PARAMS,
        tmp_path / "report",
        tmp_path / "plots",
    )
    assert summary["slices"] == len(gt) and summary["clinical_volumes"] == 10
    assert summary["nvae"]["dice_mean"] == 1.0 and summary["nvae"]["lv_ef_pct_mae"] == 0.0
    assert summary["nvae"]["anatomical_validity"] > 0.95  # generated ground truth is valid
    assert 0 < summary["nvae-gated"]["improved"] <= summary["nvae"]["improved"]
    assert summary["nvae-gated"]["worsened"] == 0
    assert summary["before"]["lv_edv_ml_mae"] == 0.0  # a shift keeps the volumes
    by_segmenter = pd.read_csv(tmp_path / "report" / "by_segmenter.csv").set_index("segmenter")
    assert by_segmenter.loc["unet", "before"] > by_segmenter.loc["swinunetr", "before"]
    by_group = pd.read_csv(tmp_path / "report" / "by_group.csv")
    assert set(by_group["group"]) == {"NOR", "MINF", "DCM", "HCM", "RV"}
    qc = summary["qc"]["plausibility"]  # the true Dice itself as the score: a perfect ranking
    assert qc["auroc"] == (1.0 if 0 < qc["bad_slices"] < len(gt) else None)
