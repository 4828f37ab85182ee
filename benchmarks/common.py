"""What every benchmark script shares: the hardware/versions record, memory and GPU sampling,
heart-like test masks, markdown tables, params at a chosen size, JSON and MLflow output.

Not a package module: the scripts beside it import it as ``common`` (their folder is first on
``sys.path`` when run as ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import math
import os
import platform
import re
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import torch
import yaml
from pydantic import ValidationError

from seglab.config import Section, TrackingSection, apply_profile, load_params
from seglab.data.phantom import masks
from seglab.errors import ConfigError
from seglab.io import write_json
from seglab.tracking import (
    git_commit,
    git_dirty,
    log_artifact,
    log_dict,
    log_metrics,
    package_versions,
    tracked_run,
)

EXPERIMENT = "benchmarks"
P = TypeVar("P", bound=Section)


def prepared_acdc_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with what every training script on prepared real ACDC takes: the params, the
    prepared splits and the prefix of its outputs; described by ``doc``'s first paragraph."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared/acdc"))
    parser.add_argument("--out", type=Path, required=True, help="prefix of the outputs")
    return parser


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one; asking for ``cuda`` without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def params_at(path: Path, model: type[P], sizes: str) -> P:
    """The params file at ``sizes``: ``quick`` is its top level, ``full`` overlays
    ``profiles.full`` (whatever ``profile`` the file itself selects)."""
    load_params(path, model)  # the file as written: every problem reported with its key path
    raw = yaml.safe_load(Path(path).read_text())
    try:
        return model.model_validate(apply_profile({**raw, "profile": sizes}))
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"{path} at --sizes {sizes}: {exc}") from exc


def _cpu_model() -> str:
    """The CPU's marketing name (``platform.processor()`` is empty or just the ISA on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (absent ones left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def environment(device: torch.device, root: Path = Path(".")) -> dict[str, Any]:
    """Hardware, load, versions and code revision: what a figure is meaningless without."""
    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "device": str(device),
        "python": platform.python_version(),
        **package_versions(),
        **_versions("numpy", "segmentation-models-pytorch"),
        "git_commit": git_commit(root),
        "git_dirty": git_dirty(root),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            "gpu_capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    return env


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


class Sampler:
    """Samples this process's resident memory (and the GPU's utilisation) in a thread.

    Host memory has no resettable peak counter that is portable (``ru_maxrss`` is the peak of
    the whole process), so the peak is the highest sample: transient spikes shorter than
    ``interval`` can be missed. GPU utilisation comes from NVML (``torch.cuda.utilization``)
    when it is installed; otherwise it is not reported.
    """

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device = device
        self.interval = interval
        self.samples: list[tuple[float, float, float | None]] = []  # (time, rss MiB, util %)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._util = device.type == "cuda"

    def _sample(self) -> None:
        util = None
        if self._util:
            try:
                util = float(torch.cuda.utilization(self.device))
            except Exception:  # no NVML (pynvml) or no permission: leave utilisation out
                self._util = False
        self.samples.append((time.perf_counter(), rss_mb(), util))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def peak_rss(self) -> float:
        return max(rss for _, rss, _ in self.samples)

    def mean_util(self, since: float = 0.0) -> float | None:
        """Mean GPU utilisation (%) over the samples taken after ``since`` (perf_counter)."""
        values = [u for t, _, u in self.samples if t >= since and u is not None]
        return sum(values) / len(values) if values else None


def heart_masks(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``[count, size, size]`` uint8 short-axis hearts (``seglab.data.phantom.masks``).

    Throughput does not depend on the content, but the NVAE's loss does: noise masks can make
    its KL diverge within a few steps at the study's learning rate.
    """
    return torch.from_numpy(masks.heart_masks(count, size, seed))


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) >= 0.001 or value == 0 else "<0.001"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A markdown table of ``rows`` with ``columns`` (key -> header); missing cells are ``-``."""
    lines = [
        "| " + " | ".join(columns.values()) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in columns) + " |")
    return "\n".join(lines)


def header(title: str, env: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The lines printed above a table: hardware, versions, settings."""
    hardware = f"{env['cpu']}, {env['usable_cores']} cores, {env['torch_threads']} torch threads"
    hardware += f", load {env['load_average_1m']}, {env['memory_gb']} GB RAM"
    if "gpu" in env:
        hardware += f"; GPU {env['gpu']} ({env['gpu_memory_gb']} GB, CUDA {env['cuda']})"
    versions = ", ".join(
        f"{name} {env[name]}"
        for name in ("python", "torch", "lightning", "monai", "segmentation-models-pytorch")
        if name in env
    )
    dirty = " (dirty)" if env.get("git_dirty") else ""
    lines = [
        f"## {title}",
        "",
        f"- hardware: {hardware}",
        f"- versions: {versions}; seglab at {str(env.get('git_commit'))[:10]}{dirty}",
        "- settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        f"- date: {env['date']}",
    ]
    return "\n".join(lines)


def report(
    name: str,
    env: Mapping[str, Any],
    settings: Mapping[str, Any],
    tables: Mapping[str, tuple[Sequence[Mapping[str, Any]], Mapping[str, str]]],
) -> tuple[str, dict[str, Any]]:
    """The printed text (header, then each titled table) and the JSON payload of a benchmark."""
    parts = [header(name, env, settings)]
    for title, (rows, columns) in tables.items():
        parts += ["", f"### {title}", "", markdown_table(rows, columns)]
    payload = {
        "benchmark": name,
        "environment": dict(env),
        "settings": dict(settings),
        **{title: [dict(row) for row in rows] for title, (rows, _) in tables.items()},
    }
    return "\n".join(parts), payload


def save_json(path: Path, payload: Mapping[str, Any]) -> None:
    write_json(path, dict(payload))


def log_to_mlflow(
    name: str,
    text: str,
    payload: Mapping[str, Any],
    metrics: Mapping[str, float],
    params_file: Path,
) -> str:
    """One run in experiment ``benchmarks`` of the project's store (``tracking`` of
    ``params_file``, relative paths against its folder): ``metrics``, the settings and hardware
    as params, the JSON payload and the printed report as artifacts. Returns the run id."""
    params_file = Path(params_file)
    tracking = load_params(params_file, TrackingSection).tracking
    env = payload["environment"]
    run_name = f"{name}-{env['device'].split(':')[0]}"
    with tracked_run(
        tracking,
        EXPERIMENT,
        run_name,
        root=params_file.parent,
        params={"settings": payload["settings"], "environment": env},
        params_file=params_file,
        tags={"benchmark": name, "device": env["device"], "gpu": env.get("gpu", "none")},
    ) as run:
        log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        log_dict(dict(payload), f"{name}.json")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.md"
            path.write_text(text + "\n")
            log_artifact(path)
        return run.info.run_id


def row_metrics(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """``<row name>.<column>`` -> value for every numeric cell, as MLflow metric keys (which
    allow only letters, digits and ``_-. /``: any other character of a row name becomes ``_``)."""
    out: dict[str, float] = {}
    for row in rows:
        name = re.sub(r"[^\w\-. /]", "_", str(row[key]))
        for column, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{name}.{column}"] = float(value)
    return out
