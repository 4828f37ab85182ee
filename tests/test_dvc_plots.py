"""DVC outputs a user reads: plots with their own axes that render offline, metrics that compare."""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = (".csv", ".tsv", ".json", ".yaml")


def plot_definitions() -> Iterator[tuple[str, dict]]:
    """(file or title, properties) of every plot: stage-level and top-level, both pipelines."""
    for dvc_file in (ROOT / "dvc.yaml", ROOT / "pipelines" / "lgg" / "dvc.yaml"):
        spec = yaml.safe_load(dvc_file.read_text())
        for stage in spec.get("stages", {}).values():
            body = stage.get("do", stage)
            for entry in body.get("plots", []):
                if isinstance(entry, dict):
                    yield from entry.items()
        for entry in spec.get("plots", []):
            yield from (entry.items() if isinstance(entry, dict) else [(entry, {})])


def test_every_data_plot_declares_x_y_and_a_template() -> None:
    checked = 0
    for name, props in plot_definitions():
        y = props.get("y")
        files = list(y) if isinstance(y, dict) else [name]
        if not any(str(f).endswith(DATA) for f in files):
            continue  # images are drawn as they are
        assert {"x", "y", "template"} <= props.keys(), name
        checked += 1
    assert checked >= 5


def test_the_html_template_has_no_cdn_and_dvc_uses_it() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    template = (ROOT / ".dvc" / config["plots"]["html_template"]).resolve()
    page = template.read_text()
    assert "{plot_divs}" in page and "<script src=" not in page and "vegaEmbed" in page
    assert "/dvc_plots/" in (ROOT / ".gitignore").read_text().split()


def test_metrics_files_are_the_comparable_views() -> None:
    """Every declared DVC metric is a ``*.metrics.json`` view (numbers only, no timings: see
    seglab.io.write_record), so `dvc exp show --only-changed` shows what a change moved."""
    declared = []
    for dvc_file in (ROOT / "dvc.yaml", ROOT / "pipelines" / "lgg" / "dvc.yaml"):
        for stage in yaml.safe_load(dvc_file.read_text())["stages"].values():
            for entry in stage.get("do", stage).get("metrics", []):
                declared.extend(entry if isinstance(entry, dict) else [entry])
    assert len(declared) >= 7
    assert [m for m in declared if not str(m).endswith(".metrics.json")] == []
