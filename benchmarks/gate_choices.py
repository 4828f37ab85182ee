"""Every gate of a trained corrector, scored on ACDCSeg's validation rows and on its test rows:
what the corrector stage's choice (``correctors.gate: auto``, :mod:`seglab.evaluation.
gate_choice`) sees on validation, and what each gate would have given on test, printed beside
it, never used to choose. Two rules choose on validation only:

- ``best_dice``: the highest validation Dice;
- ``most_valid_within``: the stage's rule, the highest validation validity among the gates that
  cost at most ``--tolerance`` of the input's validation Dice.

Run in the project folder of a correction study (its ACDCSeg, NVAE of ground-truth masks and
trained corrector):

    uv run --frozen python benchmarks/gate_choices.py /path/to/project --variant context \\
        --json gate_choices.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seglab.config import CardiacParams, load_params
from seglab.data.store import SliceSet, load_splits
from seglab.evaluation.gate_choice import candidates, choose_gate, corrected_rows, score_gates
from seglab.inference.correct import load_corrector
from seglab.inference.nvae import CHECKPOINT, NvaeModule, load_nvae
from seglab.variants import CORRECTORS


def score_split(
    rows: SliceSet, variant: str, corrector: NvaeModule, gt_nvae: NvaeModule
) -> dict[str, dict[str, float]]:
    """The input, the plain correction and every gate on one split's rows."""
    corrected = corrected_rows(corrector, gt_nvae, rows, CORRECTORS[variant].source)
    return score_gates(corrected, rows.label, rows.spacing)


def choose(val: dict[str, dict[str, float]], tolerance: float) -> dict[str, str]:
    """The gate each rule picks from the validation figures alone."""
    best = max(candidates(), key=lambda g: val[g.name]["dice_mean"])
    return {"best_dice": best.name, "most_valid_within": choose_gate(val, tolerance).name}


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
    path = params.correctors.checkpoint_path(args.variant, project)
    corrector = load_nvae(path)
    gt_nvae = load_nvae(project / params.nvae.models / CHECKPOINT)
    val, test = (score_split(splits[s], args.variant, corrector, gt_nvae) for s in ("val", "test"))
    chosen = choose(val, args.tolerance)
    stored = load_corrector(str(path), params, project).gate
    results = {
        "variant": args.variant,
        "rows": {"val": len(splits["val"]), "test": len(splits["test"])},
        "tolerance": args.tolerance,
        "stage_gate": stored.name if stored is not None else None,
        "chosen_on_val": chosen,
        "val": val,
        "test": test,
    }
    print(f"{args.variant} corrector: {results['rows']} rows; its stage chose {stored}")
    print("| gate | val Dice | val validity | test Dice | test validity | test taken |")
    print("|---|---|---|---|---|---|")
    for name in val:
        mark = "".join(f" ({rule})" for rule, n in chosen.items() if n == name)
        v, t = val[name], test[name]
        taken = f"{t['taken']:.0f}" if "taken" in t else "-"
        print(
            f"| {name}{mark} | {v['dice_mean']:.4f} | {v['anatomical_validity']:.3f} "
            f"| {t['dice_mean']:.4f} | {t['anatomical_validity']:.3f} | {taken} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
