"""The `seglab` command: parse, load params, call one function (no study logic lives here)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.errors import SeglabError, WorkerFinished
from seglab.variants import CORRECTORS, SEARCH_TARGETS

if TYPE_CHECKING:
    from seglab.config import BrainParams, CardiacParams, TrackingParams

CARDIAC_PARAMS = "params.yaml"
BRAIN_PARAMS = "pipelines/lgg/params.yaml"
DESCRIPTION = """\
seglab: the cardiac (ACDC) and brain (LGG) segmentation studies, step by step. Each command is
one step of `dvc repro` (dvc.yaml, pipelines/lgg/dvc.yaml) and logs to MLflow; every setting is
in params.yaml (pipelines/lgg/params.yaml for the brain study). `seglab COMMAND --help` for one.
"""


class _Parser(argparse.ArgumentParser):
    """Every (sub)command shows its defaults in --help."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def _data_check(args: argparse.Namespace) -> int:
    from seglab.data.check import check_path

    report = check_path(Path(args.path))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return 0 if report.ok else 1


def _phantom(args: argparse.Namespace) -> int:
    from seglab.io import refuse_overwriting_inputs

    # OUT is replaced whole: never the folder this command runs in, nor one above it.
    refuse_overwriting_inputs({"OUT": args.out}, {"the current folder": Path.cwd()})
    if args.dataset == "acdc":
        from seglab.data.phantom.acdc import write_acdc_phantom as write
    else:
        from seglab.data.phantom.lgg import write_lgg_phantom as write
    write(Path(args.out), patients=args.patients, seed=args.seed)
    print(f"wrote {args.dataset} phantom with {args.patients} patients to {args.out}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from seglab.config import BrainParams, CardiacParams, load_params
    from seglab.stages.prepare import prepare_stage

    params_file = Path(args.params or (CARDIAC_PARAMS if args.dataset == "acdc" else BRAIN_PARAMS))
    model = CardiacParams if args.dataset == "acdc" else BrainParams
    params = load_params(params_file, model)
    data = params.acdc if isinstance(params, CardiacParams) else params.lgg
    print(prepare_stage(args.dataset, data, params.tracking, params_file=params_file))
    return 0


def _anatomy(args: argparse.Namespace) -> int:
    from seglab.metrics.anatomy import render_volume_report, volume_report

    report = volume_report(Path(args.mask))
    print(json.dumps(report, indent=2) if args.json else render_volume_report(report))
    return 0 if report["valid_slices"] == report["slices"] else 1


def _tracking_params(args: argparse.Namespace) -> TrackingParams:
    from seglab.config import TrackingSection, load_params

    return load_params(args.params or CARDIAC_PARAMS, TrackingSection).tracking


def _cardiac(args: argparse.Namespace, overlays: Sequence[Path] = ()) -> tuple[Path, CardiacParams]:
    """The cardiac params file named by ``--params`` (default params.yaml), validated, with any
    overlays applied."""
    from seglab.config import CardiacParams, load_params

    params_file = Path(args.params or CARDIAC_PARAMS)
    return params_file, load_params(params_file, CardiacParams, overlays)


def _promote(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from seglab.errors import ConfigError
    from seglab.io import refuse_overwriting_inputs, write_json
    from seglab.tracking import registry

    refuse_overwriting_inputs({"--out": args.out}, {"--params": args.params or CARDIAC_PARAMS})
    from seglab.config import TrackingSection, load_params

    # The params' `promotion` section: the floors and emptied share no champion may pass.
    section = load_params(args.params or CARDIAC_PARAMS, TrackingSection)
    tracking = section.tracking
    options = {
        "metric": args.metric,
        "goal": args.goal,
        "min_delta": args.min_delta,
        "dry_run": args.dry_run,
        "params_file": Path(args.params or CARDIAC_PARAMS),
        "rules": section.promotion,
    }
    if args.all:
        if args.model or args.version:
            raise ConfigError("--all takes each model's default candidate: no MODEL, no --version")
        results = registry.promote_all(tracking, Path.cwd(), prefix=args.prefix, **options)
        text = registry.render_results(results)
    else:
        if not args.model:
            raise ConfigError("name a MODEL to promote, or pass --all")
        decision = registry.promote(
            args.model, tracking, Path.cwd(), version=args.version, **options
        )
        results, text = {args.model: decision}, registry.render_decision(decision)
    record = {
        model: asdict(r) if isinstance(r, registry.Decision) else {"refused": str(r)}
        for model, r in results.items()
    }
    print(json.dumps(record, indent=2) if args.json else text)
    if args.out:
        write_json(args.out, record)
    refused = not all(isinstance(r, registry.Decision) for r in results.values())
    return 1 if refused and not args.allow_refusals else 0


def _registry_history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from seglab.tracking.registry import promotion_history, render_history

    history = promotion_history(args.model, _tracking_params(args), Path.cwd())
    if args.json:
        print(json.dumps(asdict(history), indent=2))
    else:
        print(render_history(history))
    return 0


def _registry_pipeline(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from seglab.inference.segment import SEGMENTER_PREFIX
    from seglab.inference.served import PIPELINE, register_pipeline
    from seglab.io import refuse_overwriting_inputs, write_json
    from seglab.tracking import registry

    params_file, params = _cardiac(args)
    refuse_overwriting_inputs({"--out": args.out}, {"--params": params_file})
    root = Path.cwd()
    record: dict[str, object]
    segmenter: str | None = args.model
    if args.model == "best":
        try:
            segmenter = registry.best_champion(SEGMENTER_PREFIX, params.tracking, root)
        except SeglabError as exc:
            if not args.if_champion:
                raise
            print(f"nothing to serve: {exc}")
            record, segmenter = {"skipped": str(exc)}, None
    if segmenter is not None:
        corrector = None if args.no_corrector else args.corrector
        record = register_pipeline(
            params, root=root, segmenter=segmenter, corrector=corrector, gated=args.gated
        )
        print(record["message"])
        if args.promote:
            decision = registry.promote(
                PIPELINE, params.tracking, root, params_file=params_file, rules=params.promotion
            )
            print(registry.render_decision(decision))
            record["promotion"] = asdict(decision)
    if args.out:
        write_json(args.out, record)
    return 0


def _server(args: argparse.Namespace) -> int:
    from seglab.tracking.server import serve, with_overrides

    keys = (
        "host",
        "port",
        "workers",
        "backend_store_uri",
        "artifacts_destination",
        "allowed_hosts",
    )
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    tracking = with_overrides(_tracking_params(args), overrides)
    return serve(tracking, Path.cwd(), allow_any_host=args.allow_any_host)


def _runs_compare(args: argparse.Namespace) -> int:
    from seglab.tracking.compare import compare_runs, render_comparison

    comparison = compare_runs(args.run_a, args.run_b, _tracking_params(args), Path.cwd())
    if args.json:
        print(json.dumps(comparison.to_dict(), indent=2))
    else:
        print(render_comparison(comparison, only_differences=args.diff))
    return 0


def _train_segmenter(args: argparse.Namespace) -> int:
    from seglab.stages.segmenters import train_segmenter

    params_file, params = _cardiac(args)
    result = train_segmenter(params, args.arch, root=Path.cwd(), params_file=params_file)
    print(json.dumps(result, indent=2))
    return 0


def _train_nvae(args: argparse.Namespace) -> int:
    from seglab.stages.nvae import train_nvae

    overlays = [Path(o) for o in args.overlay or ()]
    params_file, params = _cardiac(args, overlays)
    result = train_nvae(params, root=Path.cwd(), params_file=params_file, overlays=overlays)
    print(json.dumps(result, indent=2))
    return 0


def _train_corrector(args: argparse.Namespace) -> int:
    from seglab.stages.correctors import train_corrector

    params_file, params = _cardiac(args)
    result = train_corrector(params, args.variant, root=Path.cwd(), params_file=params_file)
    print(json.dumps(result, indent=2))
    return 0


def _evaluate_correction(args: argparse.Namespace) -> int:
    from seglab.stages.correction_report import evaluate_correction

    params_file, params = _cardiac(args)
    summary = evaluate_correction(params, root=Path.cwd(), params_file=params_file)
    print(json.dumps(summary, indent=2))
    return 0


def _correct(args: argparse.Namespace) -> int:
    from seglab.inference.correct import correct_volume, qc_path, render_summary
    from seglab.io import refuse_overwriting_inputs

    out = Path(args.out)
    qc = args.qc or (qc_path(out) if out.name.endswith((".nii", ".nii.gz")) else None)
    model = args.model if Path(args.model).exists() else None  # a checkpoint file
    refuse_overwriting_inputs(
        {"-o": out, "--qc": qc},
        {
            "SEG": args.seg,
            "--image": args.image,
            "--model": model,
            "--params": args.params or CARDIAC_PARAMS,
        },
    )
    _, params = _cardiac(args)
    summary = correct_volume(
        Path(args.seg),
        Path(args.image),
        Path(args.out),
        model=args.model,
        params=params,
        root=Path.cwd(),
        gated=args.gated,
        qc_out=Path(args.qc) if args.qc else None,
    )
    print(render_summary(summary))
    return 0


def _segment(args: argparse.Namespace) -> int:
    from seglab.inference.cardiac import Chain, default_outputs, patient_images, segment_images
    from seglab.inference.correct import load_corrector
    from seglab.inference.segment import open_segmenter

    source = Path(args.image)
    if source.is_dir():
        if args.es:
            raise SeglabError(f"--es: {source} is a patient folder, whose ES image is known")
        images = patient_images(source)
    else:
        images = {"ED": source, "ES": Path(args.es)} if args.es else {"image": source}
    outs = default_outputs(Path(args.out), tuple(images))
    _, params = _cardiac(args)
    root = Path.cwd()
    segmenter = open_segmenter(args.model, params.tracking, root)
    corrector = load_corrector(args.corrector, params, root) if args.correct or args.gated else None
    chain = Chain.from_params(segmenter, params, root, corrector, args.gated)
    report = segment_images(images, outs, chain, Path(args.report) if args.report else None)
    print(report.render(outs))
    return 0


def _search_nvae(args: argparse.Namespace) -> int:
    from seglab.stages.search import search_nvae

    params_file, params = _cardiac(args)
    summary = search_nvae(
        params,
        root=Path.cwd(),
        params_file=params_file,
        target=args.target,
        storage=args.storage,
        study_name=args.study_name,
        n_trials=args.n_trials,
        sampler=args.sampler,
        multi_objective=args.multi_objective,
        workers=args.workers,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _acdcseg(args: argparse.Namespace) -> int:
    _, params = _cardiac(args)
    if args.acdcseg_command == "build":
        from seglab.stages.acdcseg import build_acdcseg as stage
    else:
        from seglab.stages.acdcseg import build_trigram as stage
    print(stage(params, root=Path.cwd()))
    return 0


def _brain(args: argparse.Namespace) -> tuple[Path, BrainParams]:
    from seglab.config import BrainParams, load_params

    params_file = Path(args.params or BRAIN_PARAMS)
    return params_file, load_params(params_file, BrainParams)


def _lgg_train(args: argparse.Namespace) -> int:
    from seglab.stages.lgg import train_lgg

    params_file, params = _brain(args)
    result = train_lgg(params, args.arch, root=Path.cwd(), params_file=params_file)
    print(json.dumps(result, indent=2))
    return 0


def _lgg_compare(args: argparse.Namespace) -> int:
    from seglab.stages.lgg_compare import compare_lgg

    params_file, params = _brain(args)
    print(compare_lgg(params, root=Path.cwd(), params_file=params_file))
    return 0


PARAMS_HELP = "params file (default: params.yaml)"
TRACKING_HELP = "params file whose tracking section names the store (default: params.yaml)"


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = _Parser(
        prog="seglab", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"seglab {version('seglab')}")
    sub = parser.add_subparsers(dest="command", required=True)

    for add_commands in (
        _data_commands,
        _tracking_commands,
        _server_commands,
        _training_commands,
        _inference_commands,
        _dataset_commands,
        _search_commands,
    ):
        add_commands(sub)
    return parser


def _data_commands(sub: Any) -> None:
    """Inspect, generate and prepare datasets; check a label volume."""
    data = sub.add_parser("data", help="inspect raw datasets").add_subparsers(
        dest="data_command", required=True
    )
    check = data.add_parser("check", help="identify and validate an ACDC or LGG dataset")
    check.add_argument("path", help="dataset folder or zip")
    check.add_argument("--json", action="store_true", help="machine-readable report")
    check.set_defaults(func=_data_check)

    phantom = sub.add_parser("phantom", help="write a generated dataset in the real on-disk format")
    phantom.add_argument("dataset", choices=["acdc", "lgg"], help="which study's format")
    phantom.add_argument("out", help="output folder (replaced atomically)")
    phantom.add_argument("--patients", type=int, default=20, help="patients to generate")
    phantom.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    phantom.set_defaults(func=_phantom)

    prepare = sub.add_parser("prepare", help="raw dataset -> 2D slices, splits (a DVC stage)")
    prepare.add_argument(
        "dataset",
        choices=["acdc", "lgg"],
        help=f"acdc: acdc.* of params.yaml; lgg: lgg.* of {BRAIN_PARAMS}",
    )
    prepare.add_argument("--params", help="params file (default: the study's own)")
    prepare.set_defaults(func=_prepare)

    anatomy = sub.add_parser("anatomy", help="per-slice anatomical validity of a label volume")
    anatomy.add_argument("mask", help="label NIfTI (0 bg, 1 RV, 2 MYO, 3 LV)")
    anatomy.add_argument("--json", action="store_true", help="machine-readable report")
    anatomy.set_defaults(func=_anatomy)


def _tracking_commands(sub: Any) -> None:
    """The registry and promotions."""
    tracking_help = TRACKING_HELP
    promote = sub.add_parser(
        "promote", help="move a model's champion alias to a better candidate, recorded"
    )
    promote.add_argument("model", nargs="?", help="registered model name")
    promote.add_argument("--all", action="store_true", help="promote every registered model")
    promote.add_argument(
        "--prefix", default="", help="with --all: only models named PREFIX* (e.g. acdc-, lgg-)"
    )
    promote.add_argument("--version", help="candidate version (default: challenger, else newest)")
    promote.add_argument("--metric", help="default: dice_mean for acdc-*, iou for lgg-*")
    promote.add_argument("--goal", choices=["max", "min"], help="default: known per metric")
    promote.add_argument("--min-delta", type=float, default=0.0, help="required improvement")
    promote.add_argument("--dry-run", action="store_true", help="decide, change nothing")
    promote.add_argument("--json", action="store_true", help="print the decisions as JSON")
    promote.add_argument("--out", help="also write the decisions as JSON (a DVC stage output)")
    promote.add_argument(
        "--allow-refusals",
        action="store_true",
        help="exit 0 even when a model cannot be compared (refusals still reported and recorded)",
    )
    promote.add_argument("--params", help=tracking_help)
    promote.set_defaults(func=_promote)

    registry = sub.add_parser("registry", help="the model registry").add_subparsers(
        dest="registry_command", required=True
    )
    history = registry.add_parser("history", help="a model's promotion decisions and aliases")
    history.add_argument("model", help="registered model name")
    history.add_argument("--json", action="store_true", help="machine-readable history")
    history.add_argument("--params", help=tracking_help)
    history.set_defaults(func=_registry_history)
    pipeline = registry.add_parser(
        "pipeline",
        help="register the served chain (acdc-cardiac-pipeline, alias challenger) built from "
        "the registry's champions: segmenter, corrector and NVAE of ground-truth masks",
    )
    pipeline.add_argument(
        "--model",
        default="best",
        help="the segmenter: best (the champion with the best test Dice) or a registry URI",
    )
    pipeline.add_argument(
        "--corrector",
        default="models:/acdc-nvae-corrector@champion",
        help="the corrector, when it has a champion (registry URI)",
    )
    pipeline.add_argument(
        "--no-corrector", action="store_true", help="serve the segmentation uncorrected"
    )
    pipeline.add_argument(
        "--gated",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="correct only where the corrector earns it",
    )
    pipeline.add_argument(
        "--promote", action="store_true", help="then promote it (seglab promote's rules)"
    )
    pipeline.add_argument(
        "--if-champion",
        action="store_true",
        help="with --model best: when no segmenter has a champion, say so and register nothing",
    )
    pipeline.add_argument("--out", help="also write what was registered as JSON (a DVC output)")
    pipeline.add_argument("--params", help=PARAMS_HELP)
    pipeline.set_defaults(func=_registry_pipeline)


def _server_commands(sub: Any) -> None:
    """The tracking server and run comparison."""
    tracking_help = TRACKING_HELP
    server = sub.add_parser("server", help="MLflow tracking server + UI (tracking.server params)")
    server.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    server.add_argument("--port", type=int, help="port to listen on (default 5000)")
    server.add_argument("--workers", type=int, help="server worker processes (default 4)")
    server.add_argument("--backend-store-uri", help="e.g. postgresql://user@db-host/mlflow")
    server.add_argument("--artifacts-destination", help="e.g. s3://bucket/mlflow")
    server.add_argument(
        "--allowed-hosts",
        help="Host headers the server answers, comma-separated (e.g. mlflow.lab.org,"
        "mlflow.lab.org:5000); required with a non-loopback --host",
    )
    server.add_argument(
        "--allow-any-host",
        action="store_true",
        help="expose a non-loopback --host without --allowed-hosts: answer any Host header",
    )
    server.add_argument("--params", help=tracking_help)
    server.set_defaults(func=_server)

    runs = sub.add_parser("runs", help="MLflow runs").add_subparsers(
        dest="runs_command", required=True
    )
    compare = runs.add_parser("compare", help="two runs side by side: params, metrics, lineage")
    compare.add_argument("run_a", help="run id or models:/NAME@ALIAS")
    compare.add_argument("run_b", help="run id or models:/NAME@ALIAS")
    compare.add_argument("--diff", action="store_true", help="only the values that differ")
    compare.add_argument("--json", action="store_true", help="machine-readable comparison")
    compare.add_argument("--params", help=tracking_help)
    compare.set_defaults(func=_runs_compare)


def _training_commands(sub: Any) -> None:
    """The training and evaluation stages of the cardiac study."""
    train_sub = sub.add_parser("train", help="train a model (DVC stages)").add_subparsers(
        dest="train_command", required=True
    )
    segmenter = train_sub.add_parser(
        "segmenter",
        help="cross-predict the training patients, then train, test and register one ACDC "
        "segmenter (MLflow experiment acdc-segmenters)",
    )
    segmenter.add_argument(
        "--arch", required=True, help="unet | resunet | attunet | swinunetr (segmenters.archs)"
    )
    segmenter.add_argument("--params", help=PARAMS_HELP)
    segmenter.set_defaults(func=_train_segmenter)
    nvae = train_sub.add_parser(
        "nvae",
        help="train the NVAE on ground-truth masks, test its reconstructions and samples, "
        "register it as acdc-nvae (MLflow experiment acdc-nvae)",
    )
    nvae.add_argument("--params", help=PARAMS_HELP)
    nvae.add_argument(
        "--overlay",
        action="append",
        metavar="FILE",
        help="params merged on top, after the profile (repeatable, in order), e.g. a search's "
        "search/best_nvae.yaml",
    )
    nvae.set_defaults(func=_train_nvae)

    corrector = train_sub.add_parser(
        "corrector",
        help="train an NVAE corrector from ACDCSeg predictions (nvae) or their 3-gram (context) "
        "to ground truth, correct and gate the test rows, register it (acdc-correctors)",
    )
    corrector.add_argument(
        "--variant",
        required=True,
        choices=list(CORRECTORS),
        help="nvae: from single predicted masks (ACDCSeg); context: from their 3-gram",
    )
    corrector.add_argument("--params", help=PARAMS_HELP)
    corrector.set_defaults(func=_train_corrector)

    evaluate = sub.add_parser("evaluate", help="evaluation stages").add_subparsers(
        dest="evaluate_command", required=True
    )
    correction = evaluate.add_parser(
        "correction",
        help="the correction study's report: Dice, validity, clinical indices and QC before "
        "and after correction (metrics/correction.json, reports/correction)",
    )
    correction.add_argument("--params", help=PARAMS_HELP)
    correction.set_defaults(func=_evaluate_correction)


def _inference_commands(sub: Any) -> None:
    """Segment and correct new volumes with registered models."""
    correct = sub.add_parser(
        "correct",
        help="correct a label volume (ACDC labels 0..3) with a registered NVAE corrector; "
        "writes it back in the input's geometry, with per-slice QC scores",
    )
    correct.add_argument("seg", help="label volume (.nii/.nii.gz): 0 bg, 1 RV, 2 MYO, 3 LV")
    correct.add_argument("--image", required=True, help="the matching MR image volume")
    correct.add_argument("-o", "--out", required=True, help="corrected label volume to write")
    correct.add_argument(
        "--model",
        default="models:/acdc-nvae-corrector@champion",
        help="a registry URI (models:/NAME@ALIAS or models:/NAME/VERSION) or a corrector "
        "checkpoint (.ckpt); a 12-channel (context) model gets the 3-gram of the volume",
    )
    correct.add_argument(
        "--gated", action="store_true", help="keep input slices unless the corrector earns it"
    )
    correct.add_argument("--qc", help="per-slice QC scores as CSV (default: OUT with .qc.csv)")
    correct.add_argument("--params", help=PARAMS_HELP)
    correct.set_defaults(func=_correct)

    segment = sub.add_parser(
        "segment",
        help="segment a new patient with the registry's segmenter (optionally correct): label "
        "volumes in the input's geometry; with ED and ES, clinical indices and a QC report",
    )
    segment.add_argument(
        "image",
        help="the ED (or only) MR image (.nii/.nii.gz), or an ACDC patient folder (its ED and "
        "ES images, frame numbers from Info.cfg; the ground truth is not read)",
    )
    segment.add_argument("--es", help="the same patient's ES image: clinical indices too")
    segment.add_argument(
        "-o",
        "--out",
        required=True,
        help="segmentation of the first frame (.nii/.nii.gz); the ES one goes beside it as "
        "<stem>_es.nii.gz",
    )
    segment.add_argument(
        "--model",
        default="best",
        help="best (the segmenter champion with the best test Dice), a registry URI "
        "(models:/acdc-segmenter-attunet@champion) or a checkpoint (.ckpt)",
    )
    segment.add_argument(
        "--correct", action="store_true", help="correct the segmentation with --corrector"
    )
    segment.add_argument(
        "--gated",
        action="store_true",
        help="correct only the slices where the corrector earns it (implies --correct)",
    )
    segment.add_argument(
        "--corrector",
        default="models:/acdc-nvae-corrector@champion",
        help="a registry URI or a corrector checkpoint (.ckpt)",
    )
    segment.add_argument("--report", help="write the report (JSON) here")
    segment.add_argument("--params", help=PARAMS_HELP)
    segment.set_defaults(func=_segment)


def _dataset_commands(sub: Any) -> None:
    """ACDCSeg and its 3-gram; the brain study's stages."""
    acdcseg = sub.add_parser(
        "acdcseg", help="the segmenters' predicted masks as datasets (DVC stages)"
    ).add_subparsers(dest="acdcseg_command", required=True)
    for name, text in (
        ("build", "predict every prepared slice with every segmenter -> acdcseg.out"),
        ("trigram", "ACDCSeg -> prev/current/next predicted slices -> acdcseg.trigram"),
    ):
        command = acdcseg.add_parser(name, help=text)
        command.add_argument("--params", help=PARAMS_HELP)
        command.set_defaults(func=_acdcseg)

    lgg = sub.add_parser(
        "lgg", help="the brain study: LGG architecture comparison (DVC stages in pipelines/lgg)"
    ).add_subparsers(dest="lgg_command", required=True)
    lgg_train = lgg.add_parser(
        "train",
        help="train, test and register one smp architecture as lgg-<decoder>-<encoder> "
        "(MLflow experiment lgg-architectures)",
    )
    lgg_train.add_argument(
        "--arch", required=True, help="<decoder>-<encoder>, one of architectures.names"
    )
    lgg_train.add_argument("--params", help=f"params file (default: {BRAIN_PARAMS})")
    lgg_train.set_defaults(func=_lgg_train)
    lgg_compare = lgg.add_parser(
        "compare", help="comparison table (md, csv) and figures over every trained architecture"
    )
    lgg_compare.add_argument("--params", help=f"params file (default: {BRAIN_PARAMS})")
    lgg_compare.set_defaults(func=_lgg_compare)


def _search_commands(sub: Any) -> None:
    """Optuna searches."""
    search = sub.add_parser("search", help="Optuna searches (DVC stage search_nvae)")
    search_sub = search.add_subparsers(dest="search_command", required=True)
    nvae_search = search_sub.add_parser(
        "nvae",
        help="search the NVAE's per-scale beta and stem width (search.* params); each trial is "
        "an MLflow run of experiment acdc-nvae-search, the best becomes a challenger",
    )
    nvae_search.add_argument(
        "--target", choices=list(SEARCH_TARGETS), help="default: search.target"
    )
    nvae_search.add_argument(
        "--storage",
        help="sqlite:///optuna.db (default), a journal file path (several processes on one "
        "machine) or postgresql://user@host/db (several machines)",
    )
    nvae_search.add_argument("--study-name", help="resumed when it exists (default: derived)")
    nvae_search.add_argument(
        "--n-trials",
        "--n_trials",  # as `mlflow run -e search_nvae -P n_trials=N` passes it
        type=int,
        help="the study's total of finished trials (default: search.n_trials)",
    )
    nvae_search.add_argument(
        "--sampler", choices=["tpe", "grid", "random"], help="default: search.sampler"
    )
    nvae_search.add_argument(
        "--multi-objective",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also maximise anatomical validity (Pareto front)",
    )
    nvae_search.add_argument("--workers", type=int, help="worker processes on this machine")
    nvae_search.add_argument("--params", help=PARAMS_HELP)
    nvae_search.set_defaults(func=_search_nvae)


def main(argv: Sequence[str] | None = None) -> int:
    from seglab.quiet import quiet_libraries

    args = build_parser().parse_args(argv)
    quiet_libraries()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except WorkerFinished:
        return 0
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
