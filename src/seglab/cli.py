"""The `seglab` command: parse, load params, call one function. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from seglab.errors import SeglabError

CARDIAC_PARAMS = "params.yaml"
BRAIN_PARAMS = "pipelines/lgg/params.yaml"


def _data_check(args: argparse.Namespace) -> int:
    from seglab.data.check import check_path

    report = check_path(Path(args.path))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


def _phantom(args: argparse.Namespace) -> int:
    if args.dataset == "acdc":
        from seglab.data.phantom.acdc import write_acdc_phantom as write
    else:
        from seglab.data.phantom.lgg import write_lgg_phantom as write
    write(Path(args.out), patients=args.patients, seed=args.seed)
    print(f"wrote {args.dataset} phantom with {args.patients} patients to {args.out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from seglab.config import BrainParams, CardiacParams, load_params

    if args.dataset == "acdc":
        from seglab.data.prepare_acdc import prepare_acdc

        summary = prepare_acdc(load_params(args.params or CARDIAC_PARAMS, CardiacParams).acdc)
    else:
        from seglab.data.prepare_lgg import prepare_lgg

        summary = prepare_lgg(load_params(args.params or BRAIN_PARAMS, BrainParams).lgg)
    print(summary)
    return 0


def _anatomy(args: argparse.Namespace) -> int:
    from seglab.metrics.anatomy import render_volume_report, volume_report

    report = volume_report(Path(args.mask))
    print(json.dumps(report, indent=2) if args.json else render_volume_report(report))
    return 0 if report["valid_slices"] == report["slices"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect raw datasets").add_subparsers(
        dest="data_command", required=True
    )
    check = data.add_parser("check", help="identify and validate an ACDC or LGG dataset")
    check.add_argument("path", help="dataset folder or zip")
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.set_defaults(func=_data_check)

    phantom = sub.add_parser("phantom", help="write a generated dataset in the real on-disk format")
    phantom.add_argument("dataset", choices=["acdc", "lgg"])
    phantom.add_argument("out", help="output folder (replaced atomically)")
    phantom.add_argument("--patients", type=int, default=20)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.set_defaults(func=_phantom)

    prepare = sub.add_parser("prepare", help="raw dataset -> 2D slices, splits (a DVC stage)")
    prepare.add_argument("dataset", choices=["acdc", "lgg"])
    prepare.add_argument("--params", help="params file (default: the study's own)")
    prepare.set_defaults(func=_prepare)

    anatomy = sub.add_parser("anatomy", help="per-slice anatomical validity of a label volume")
    anatomy.add_argument("mask", help="label NIfTI (0 bg, 1 RV, 2 MYO, 3 LV)")
    anatomy.add_argument("--json", action="store_true")
    anatomy.set_defaults(func=_anatomy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SeglabError as exc:
        print(f"seglab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seglab: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
