"""Which gate would ACDCSeg's validation rows choose for a trained corrector? Every gate of
:class:`seglab.config.GateParams` (the validity test on or off, the plausibility test off or
below each of several thresholds) applied to the corrector's output on the validation rows and
on the test rows; two rules choose on validation only, and test figures are printed for every
gate, never used to choose:

- ``best_dice``: the highest validation Dice;
- ``most_valid_within``: the highest validation validity among the gates that cost at most
  ``--tolerance`` (0.002, the issue's goal) of the input's validation Dice.

The correction stage gates with the fixed ``correctors.gate`` of params.yaml; this measures
what choosing it on validation would buy. Run in the project folder of a correction study
(its ACDCSeg, NVAE of ground-truth masks and trained corrector):

    uv run --frozen python benchmarks/gate_choices.py /path/to/project --variant context \\
        --json gate_choices.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seglab.config import CardiacParams, GateParams, load_params
from seglab.data.store import SliceSet, load_splits
from seglab.inference.correction import correct, gate, plausibility
from seglab.inference.nvae import CHECKPOINT, load_nvae
from seglab.metrics.anatomy import check_slices
from seglab.metrics.emptied import check_against
from seglab.metrics.overlap import overlap, summarize_overlap
from seglab.variants import CORRECTORS

THRESHOLDS = (None, 0.5, 0.6, 0.7, 0.8, 0.9)
FIGURES = ("dice_mean", "dice_lv", "dice_myo", "dice_rv", "anatomical_validity")


def gates() -> dict[str, GateParams]:
    """Every gate, by name (``validity+plausibility<0.8``); the one taking nothing is left out."""
    out = {}
    for validity in (True, False):
        for below in THRESHOLDS:
            if validity or below is not None:
                name = "+".join(
                    (["validity"] if validity else [])
                    + ([f"plausibility<{below}"] if below is not None else [])
                )
                out[name] = GateParams(validity=validity, plausibility_below=below)
    return out


def figures(labels: np.ndarray, rows: SliceSet) -> dict[str, float]:
    """Dice and anatomical validity against the ground truth, as the correction stage reports."""
    dice = summarize_overlap(overlap(labels, rows.label, rows.spacing))
    valid = check_against(labels, rows.label, rows.spacing).summary()
    return {k: float({**dice, **valid}[k]) for k in FIGURES}


def score_split(rows: SliceSet, variant: str, corrector: Any, gt_nvae: Any) -> dict[str, Any]:
    """The input, the plain correction and every gate on one split's rows."""
    source = CORRECTORS[variant].source
    stored = rows.extra[source]
    before = stored[:, 1] if source == "context" else stored  # a 3-gram's middle map
    after = correct(corrector, stored)
    valid_before = check_slices(before, rows.spacing).valid
    valid_after = check_against(after, before, rows.spacing).valid  # an erased heart is invalid
    plausible = plausibility(gt_nvae, before)
    scored = {"input": figures(before, rows), "plain": figures(after, rows)}
    for name, params in gates().items():
        gated = gate(before, after, valid_before, valid_after, plausible, params)
        scored[name] = figures(gated.labels, rows) | {"taken": int(gated.taken.sum())}
    return scored


def choose(val: dict[str, dict[str, float]], tolerance: float) -> dict[str, str]:
    """The gate each rule picks from the validation figures alone."""
    names = list(gates())
    best = max(names, key=lambda n: val[n]["dice_mean"])
    floor = val["input"]["dice_mean"] - tolerance
    within = [n for n in names if val[n]["dice_mean"] >= floor] or [best]
    valid = max(within, key=lambda n: (val[n]["anatomical_validity"], val[n]["dice_mean"]))
    return {"best_dice": best, "most_valid_within": valid}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="project folder of the correction study")
    parser.add_argument("--params", default="params.yaml", help="relative to the project")
    parser.add_argument("--variant", default="context", choices=sorted(CORRECTORS))
    parser.add_argument("--tolerance", type=float, default=0.002)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    params = load_params(project / args.params, CardiacParams)
    splits = load_splits(project / CORRECTORS[args.variant].folder(params))
    corrector = load_nvae(project / params.correctors.models / f"{args.variant}.ckpt")
    gt_nvae = load_nvae(project / params.nvae.models / CHECKPOINT)
    val, test = (score_split(splits[s], args.variant, corrector, gt_nvae) for s in ("val", "test"))
    chosen = choose(val, args.tolerance)
    fixed = params.correctors.gate
    stage = next((n for n, g in gates().items() if g == fixed), None)
    results = {
        "variant": args.variant,
        "rows": {"val": len(splits["val"]), "test": len(splits["test"])},
        "tolerance": args.tolerance,
        "stage_gate": stage,
        "chosen_on_val": chosen,
        "val": val,
        "test": test,
    }
    print(f"{args.variant} corrector: {results['rows']} rows; the stage gates with {stage}")
    print("| gate | val Dice | val validity | test Dice | test validity | test taken |")
    print("|---|---|---|---|---|---|")
    for name in val:
        mark = "".join(f" ({rule})" for rule, n in chosen.items() if n == name)
        v, t = val[name], test[name]
        print(
            f"| {name}{mark} | {v['dice_mean']:.4f} | {v['anatomical_validity']:.3f} "
            f"| {t['dice_mean']:.4f} | {t['anatomical_validity']:.3f} | {t.get('taken', '-')} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
