"""Per-stage wall time of `dvc repro` (both pipelines), in a throw-away clone.

Issue 10 asks the quick profile to finish everything in under 15 minutes on 2 CPU cores, and to
show where the time goes. This clones the repository (committed state, so the working tree and
its caches are untouched), then runs every stage of both pipelines once, in dependency order,
with `dvc repro --single-item`, timing each; it prints a table and the total.

    uv run python benchmarks/bench_pipeline.py                    # quick profile, phantom data
    uv run python benchmarks/bench_pipeline.py --json bench.json --keep /tmp/clone
    uv run python benchmarks/bench_pipeline.py --set profile=full  # any params.yaml override

The stages run with this environment's interpreter and installed `seglab` (an editable install
points at this checkout's src/, so commit before measuring).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import yaml
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]


def stage_order(root: Path) -> list[str]:
    """Every stage of every dvc.yaml under ``root``, dependencies first."""
    with contextlib.chdir(root), Repo(".") as repo:  # addresses relative to the project
        graph = repo.index.graph
        order = list(reversed(list(nx.topological_sort(graph))))
        return [stage.addressing for stage in order if getattr(stage, "cmd", None)]


def set_params(root: Path, overrides: list[str]) -> None:
    """Write ``key.path=value`` overrides (values in YAML) into the clone's params.yaml, as
    ``dvc exp run -S`` would (``dvc repro`` takes no -S)."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: expected key.path=value")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(root: Path, stage: str) -> tuple[float, int]:
    args = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
    return seconds, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="clone into this folder and keep it")
    parser.add_argument(
        "--set", action="append", default=[], help="params.yaml override key=value, repeatable"
    )
    args = parser.parse_args(argv)

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="seglab-bench-"))
    if workdir.exists() and any(workdir.iterdir()):
        parser.error(f"{workdir} is not empty")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(workdir)], check=True)
    try:
        set_params(workdir, args.set)
        stages = stage_order(workdir)
        rows: list[dict[str, object]] = []
        for stage in stages:
            seconds, code = run_stage(workdir, stage)
            rows.append({"stage": stage, "seconds": round(seconds, 1), "ok": code == 0})
            print(f"{stage:55s} {seconds:8.1f} s {'ok' if code == 0 else 'FAILED'}", flush=True)
            if code != 0:
                break
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    total = sum(float(r["seconds"]) for r in rows)  # type: ignore[arg-type]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print()
    print(
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average now {load[0]:.1f}; overrides: {args.set or 'none'}"
    )
    print("| stage | seconds |\n|---|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['seconds']} |")
    print(f"| **total** | **{total:.1f}** ({total / 60:.1f} min) |")
    if args.json:
        payload = {"stages": rows, "total_seconds": total, "overrides": args.set, "load": load}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
