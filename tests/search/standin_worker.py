"""A search worker process with a cheap stand-in for NVAE training, for the storage tests.

    python standin_worker.py STORAGE STUDY TOTAL LOG [--sleep S] [--first-sleep S]
        [--heartbeat S] [--grace S] [--seed N]

Runs the real worker loop (``seglab.search.study.run_worker``) and objective
(``seglab.search.objective.NvaeObjective``) against STORAGE; the "training" sleeps and returns a
pure function of the parameters. Every trial it starts is appended to LOG as
``pid trial-number checkpoint-folder`` (the line is written before the sleep, so a trial killed
mid-way is in the log too). ``--first-sleep`` makes the first trial of this process long, for
killing it mid-trial.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import optuna

from seglab.config import NvaeParams, SearchParams
from seglab.search.objective import NvaeObjective, TrialResult
from seglab.search.space import SearchSpace
from seglab.search.storage import open_storage
from seglab.search.study import budget, objectives, open_study, run_worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("storage")
    parser.add_argument("study")
    parser.add_argument("total", type=int)
    parser.add_argument("log")
    parser.add_argument("--sleep", type=float, default=0.3)
    parser.add_argument("--first-sleep", type=float, default=None)
    parser.add_argument("--heartbeat", type=int, default=1)
    parser.add_argument("--grace", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    search = SearchParams(n_trials=args.total, seed=args.seed, pruning=False)
    base = NvaeParams()
    space = SearchSpace.from_params(search, base)
    storage = open_storage(
        args.storage, Path.cwd(), heartbeat_interval=args.heartbeat, grace_period=args.grace
    )
    study, _ = open_study(storage, args.study, search, space, worker=args.seed)
    started = {"n": 0}

    def runner(nvae: NvaeParams, folder: Path, callbacks: object, run_id: str | None):
        with open(args.log, "a") as log:
            log.write(f"{os.getpid()} {folder.name} {nvae.beta} {nvae.stem_channels}\n")
        long = args.first_sleep is not None and started["n"] == 0
        started["n"] += 1
        time.sleep(args.first_sleep if long else args.sleep)
        score = -sum((b - 10.0) ** 2 for b in nvae.beta) - nvae.stem_channels / 100
        return TrialResult({"dice_mean": score, "anatomical_validity": 1.0})

    objective = NvaeObjective(
        space=space,
        base=base,
        runner=runner,
        objectives=objectives(search),
        total=budget(search, space),
        work=Path("work"),
        open_run=lambda number, params, nvae: contextlib.nullcontext(None),
        record=lambda record: None,
        pruning=False,
    )
    ran = run_worker(study, objective, budget(search, space), poll_seconds=0.5)
    print(f"worker {os.getpid()} ran {ran} trials")


if __name__ == "__main__":
    main()
