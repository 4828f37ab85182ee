"""`seglab runs compare`: two runs side by side (params, metrics, lineage), differences marked.

A run is named by its id or by the registered version it produced (``models:/NAME@champion``,
``models:/NAME/3``), so "what changed between the champion and the challenger" is one command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from seglab.config import TrackingParams
from seglab.errors import SeglabError
from seglab.tracking.registry import resolve_version
from seglab.tracking.runs import configure

SECTIONS = ("run", "params", "metrics", "lineage", "tags")
# The tags seglab.tracking.lineage puts on every run.
LINEAGE_PREFIXES = ("git.", "seglab.git.", "data.", "params.sha256", "version.")
WIDTH = 44  # a column's widest value in the table; --json gives values in full


@dataclass(frozen=True)
class Row:
    section: str
    key: str
    a: str | None
    b: str | None

    @property
    def differs(self) -> bool:
        return self.a != self.b


@dataclass(frozen=True)
class RunComparison:
    """Two runs (as named on the command line, and their run ids) and their rows."""

    refs: tuple[str, str]
    run_ids: tuple[str, str]
    rows: list[Row]

    def to_dict(self) -> dict[str, object]:
        return {
            "runs": [{"ref": r, "run_id": i} for r, i in zip(self.refs, self.run_ids, strict=True)],
            "rows": [{**asdict(row), "differs": row.differs} for row in self.rows],
        }


def _run(client: MlflowClient, ref: str, tracking: TrackingParams, root: Path) -> Run:
    run_id = resolve_version(ref, tracking, root).run_id if ref.startswith("models:/") else ref
    if not run_id:
        raise SeglabError(f"{ref}: the model version names no run")
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise SeglabError(f"run '{ref}' not found in {client.tracking_uri}") from exc


def _sections(client: MlflowClient, run: Run) -> dict[str, dict[str, str]]:
    info, tags = run.info, run.data.tags
    experiment = client.get_experiment(info.experiment_id)
    summary = {
        "name": info.run_name or "",
        "experiment": experiment.name if experiment else info.experiment_id,
        "status": info.status,
        "start (UTC)": _time(info.start_time),
        "seconds": f"{(info.end_time - info.start_time) / 1000:.1f}" if info.end_time else "",
    }
    lineage = {k: v for k, v in tags.items() if k.startswith(LINEAGE_PREFIXES)}
    return {
        "run": {k: v for k, v in summary.items() if v},
        "params": dict(run.data.params),
        "metrics": {k: f"{v:.6g}" for k, v in run.data.metrics.items()},
        "lineage": lineage,
        "tags": {k: v for k, v in tags.items() if k not in lineage and not k.startswith("mlflow.")},
    }


def _time(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def compare_runs(ref_a: str, ref_b: str, tracking: TrackingParams, root: Path) -> RunComparison:
    """Side-by-side params, metrics, lineage and tags of two runs (ids or ``models:/`` URIs)."""
    uri = configure(tracking, root)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_a, run_b = (_run(client, ref, tracking, root) for ref in (ref_a, ref_b))
    left, right = _sections(client, run_a), _sections(client, run_b)
    rows = [
        Row(section, key, left[section].get(key), right[section].get(key))
        for section in SECTIONS
        for key in _keys(section, left[section], right[section])
    ]
    return RunComparison((ref_a, ref_b), (run_a.info.run_id, run_b.info.run_id), rows)


def _keys(section: str, left: dict[str, str], right: dict[str, str]) -> list[str]:
    """Both runs' keys: the run summary in its own order, the rest sorted."""
    keys = list(dict.fromkeys([*left, *right]))
    return keys if section == "run" else sorted(keys)


def _clip(value: str | None) -> str:
    if value is None:
        return "-"
    return value if len(value) <= WIDTH else value[: WIDTH - 3] + "..."


def render_comparison(comparison: RunComparison, *, only_differences: bool = False) -> str:
    """A table per section; ``*`` marks the rows whose values differ."""
    rows = [r for r in comparison.rows if r.differs or not only_differences]
    head = [
        f"{label}: {ref}" + (f" (run {run_id})" if ref != run_id else "")
        for label, ref, run_id in zip("AB", comparison.refs, comparison.run_ids, strict=True)
    ]
    key_width = max([len(r.key) for r in rows] + [3])
    a_width = max([len(_clip(r.a)) for r in rows] + [1])
    lines = [*head]
    for section in SECTIONS:
        in_section = [r for r in rows if r.section == section]
        if not in_section:
            continue
        lines += ["", f"[{section}]"]
        lines += [
            f"{'*' if r.differs else ' '} {r.key.ljust(key_width)}  "
            f"{_clip(r.a).ljust(a_width)}  {_clip(r.b)}".rstrip()
            for r in in_section
        ]
    differing = sum(r.differs for r in comparison.rows)
    lines += ["", f"{differing} of {len(comparison.rows)} values differ (* marks them)"]
    return "\n".join(lines)
