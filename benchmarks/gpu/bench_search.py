"""The search's throughput on one GPU: trials per hour with 1, 4 and 8 Optuna workers sharing it.

The study ran its 27 NVAE trainings (the grid beta in {8, 10, 11} per scale, stem 4) in 71 hours
on a P100. Here each worker is a process that puts the pack on the GPU and takes trials of the
``full`` profile's grid from one Optuna journal file (``JournalStorage``: several processes, no
database server, what a search on one machine uses); each trial is the stem-4 NVAE trained for
``--trial-epochs`` epochs (bf16, channels-last, as ``bench_gpu.py``) and scored by its best
validation Dice. For each worker count the workers run for ``--minutes``; a trial counts when it
finished all its epochs inside that window, epochs count wherever they fall. It prints, per
worker count, trials and epochs per hour, the GPU's peak memory per worker and its utilisation,
and what the study's 27 trainings of ``full``'s 100 epochs would take at that rate.

Needs Optuna and colorlog on the GPU machine (``fetch_wheels.sh`` carries them); runs on a CPU
at tiny sizes (``--tiny``, the test suite's dry run).

    python benchmarks/gpu/bench_search.py --pack .gpupack/acdc.npz --workers 1 4 8 --out s.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np
import optuna
import torch
from optuna.storages.journal import JournalFileBackend, JournalStorage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import Utilisation, full_params, on_device, peak_memory_gib, trainer_for  # noqa: E402
from pack import load_pack  # noqa: E402

from seglab.data.acdcseg import nvae_tensors  # noqa: E402
from seglab.quiet import quiet_libraries  # noqa: E402
from seglab.search.space import SearchSpace  # noqa: E402
from seglab.training.nvae_fit import train_nvae_model  # noqa: E402
from seglab.training.segmenters import MONITOR  # noqa: E402

STUDY = {"trainings": 27, "hours": 71.0, "epochs": 100}


def storage(journal: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(journal)))


def worker(journal: Path, clock: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Load, report ready, then take trials from the study in ``journal`` until the deadline
    the parent sets once every worker is ready (start-up is not counted in the window)."""
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = full_params(args.tiny)
    space = SearchSpace.from_params(params.search, params.nvae.model)
    splits = load_pack(args.pack)
    data = {name: on_device(*nvae_tensors(splits[name], "gt")) for name in ("train", "val")}
    study = optuna.load_study(study_name="throughput", storage=storage(journal))
    ready, go, shared_deadline = clock
    ready.put(True)
    go.wait()
    deadline = shared_deadline.value

    def objective(trial: optuna.Trial) -> float:
        model = space.apply(params.nvae.model, space.suggest(trial))
        budget = argparse.Namespace(**{**vars(args), "max_epochs": args.trial_epochs})
        trainer = trainer_for(params.nvae.trainer, (deadline - time.time()) / 60, budget)
        with tempfile.TemporaryDirectory() as work:
            fitted = train_nvae_model(model, trainer, data, Path(work))
        trial.set_user_attr("epochs", len(fitted.history))
        trial.set_user_attr("finished", time.time())
        return float(np.nanmax([row.get(MONITOR, math.nan) for row in fitted.history]))

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while time.time() < deadline - 1:
        study.optimize(objective, n_trials=1)
    return {"peak_gpu_memory_gib": peak_memory_gib()}


def _work(queue: Any, journal: Path, clock: Any, args: argparse.Namespace) -> None:
    queue.put(worker(journal, clock, args))


def _gather(queue: Any, procs: list[Any]) -> list[Any]:
    """One item per worker from ``queue``; a worker that died puts none: raise, naming it."""
    items: list[Any] = []
    while len(items) < len(procs):
        try:
            items.append(queue.get(timeout=5))
        except Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a search worker died (exit code {dead[0]})") from None
    return items


def finished_trials(
    trials: Sequence[optuna.trial.FrozenTrial], epochs: int, deadline: float
) -> list[optuna.trial.FrozenTrial]:
    """The trials that count: complete, all ``epochs`` trained (the budget cuts the last one
    short at the deadline), finished by ``deadline``."""
    return [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.user_attrs.get("epochs") == epochs
        and t.user_attrs.get("finished", math.inf) <= deadline
    ]


def measure(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One window of ``args.minutes`` with ``workers`` processes on one journal."""
    with tempfile.TemporaryDirectory() as folder:
        journal = Path(folder) / "journal.log"
        params = full_params(args.tiny)
        grid = SearchSpace.from_params(params.search, params.nvae.model).grid_space()
        optuna.create_study(
            study_name="throughput",
            storage=storage(journal),
            direction="maximize",
            sampler=optuna.samplers.GridSampler(grid, seed=0),
        )
        context = multiprocessing.get_context("spawn")  # CUDA cannot follow a fork
        queue, ready, go = context.Queue(), context.Queue(), context.Event()
        shared_deadline = context.Value("d", 0.0)
        procs = [
            context.Process(target=_work, args=(queue, journal, (ready, go, shared_deadline), args))
            for _ in range(workers)
        ]
        for proc in procs:
            proc.start()
        _gather(ready, procs)
        utilisation = Utilisation()
        with utilisation.watch():
            start = time.time()
            deadline = shared_deadline.value = start + args.minutes * 60
            go.set()
            results = _gather(queue, procs)
            for proc in procs:
                proc.join()
        window_h = (time.time() - start) / 3600
        trials = optuna.load_study(study_name="throughput", storage=storage(journal)).trials
    finished = finished_trials(trials, args.trial_epochs, deadline)
    epochs_per_hour = sum(t.user_attrs.get("epochs", 0) for t in trials) / window_h
    return {
        "workers": workers,
        "window_seconds": window_h * 3600,
        "trials_finished": len(finished),
        "trials_per_hour": len(finished) / window_h,
        "epochs_per_hour": epochs_per_hour,
        "study_grid_hours": STUDY["trainings"] * STUDY["epochs"] / epochs_per_hour
        if epochs_per_hour
        else None,
        "best_val_dice": max((t.value for t in finished), default=None),
        "peak_gpu_memory_gib_per_worker": max(
            (r["peak_gpu_memory_gib"] for r in results if r["peak_gpu_memory_gib"]), default=None
        ),
        "gpu_utilisation_percent": utilisation.mean(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True, help="from benchmarks/gpu/pack.py")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--minutes", type=float, default=1.0, help="window per worker count")
    parser.add_argument("--trial-epochs", type=int, default=5, help="epochs of one trial")
    parser.add_argument("--batch", type=int, help="training batch (default: the profile's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, 2 batches: a dry run")
    args = parser.parse_args(argv)
    quiet_libraries()
    study_rate = STUDY["trainings"] / STUDY["hours"]
    print(f"the study: {STUDY['trainings']} trainings in {STUDY['hours']:.0f} h", flush=True)
    rows = []
    for workers in args.workers:
        row = measure(workers, args)
        rows.append(row)
        memory = row["peak_gpu_memory_gib_per_worker"]
        print(
            f"{workers} worker(s): {row['trials_finished']} trials of {args.trial_epochs} epochs "
            f"in {row['window_seconds']:.0f} s = {row['trials_per_hour']:.0f} trials/h "
            f"({row['trials_per_hour'] / study_rate:.0f}x the study's), "
            f"{row['epochs_per_hour']:.0f} epochs/h: the study's grid of {STUDY['trainings']} x "
            f"{STUDY['epochs']} epochs in {row['study_grid_hours'] or math.inf:.2f} h; "
            f"memory/worker {'-' if memory is None else f'{memory:.1f} GiB'}",
            flush=True,
        )
    report = {"study": STUDY, "args": vars(args) | {"pack": str(args.pack)}, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
