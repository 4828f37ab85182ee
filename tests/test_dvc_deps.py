"""dvc.yaml cannot drift from the code: every stage's `deps:` covers every seglab source file its
command imports, directly or not (derived from the code, not listed by hand).

A stage's command is parsed by the real CLI parser; the CLI function it calls names the seglab
modules it imports, and their import closure (every `import seglab...` of each module, at any
depth, including the packages' `__init__`) is what the command runs. A dep covers a file when it
is that file or a folder holding it.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from seglab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PIPELINES = (ROOT / "dvc.yaml", ROOT / "pipelines" / "lgg" / "dvc.yaml")


def module_file(name: str) -> Path | None:
    """The source file of seglab module ``name`` (a package: its ``__init__.py``)."""
    base = SRC / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(tree: ast.AST, package: str) -> Iterator[str]:
    """seglab modules imported anywhere in ``tree`` (outside ``if TYPE_CHECKING:`` blocks)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # type-only imports run nothing
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("seglab"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            if base.startswith("seglab"):
                yield base
                yield from (f"{base}.{a.name}" for a in node.names)  # maybe submodules


def closure(modules: set[str]) -> set[Path]:
    """Every seglab source file that importing ``modules`` runs."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_imports(ast.parse(path.read_text()), package))
    return files


def command_modules(cmd: str) -> set[str]:
    """The seglab modules the CLI function behind ``cmd`` imports."""
    argv = shlex.split(cmd)
    assert argv[0] == "seglab", cmd
    args = build_parser().parse_args(argv[1:])
    tree = ast.parse(inspect.getsource(args.func).lstrip())
    names = set(_imports(tree, "seglab"))
    # Helpers of the CLI the function calls (parameter loading) count too.
    for helper in re.findall(r"\b(_[a-z_]+)\(", inspect.getsource(args.func)):
        func = getattr(inspect.getmodule(args.func), helper, None)
        if callable(func):
            names |= set(_imports(ast.parse(inspect.getsource(func).lstrip()), "seglab"))
    return names


def stages() -> Iterator[tuple[str, str, list[str]]]:
    """(name, command with templates filled, deps) of every stage that runs seglab."""
    for dvc_file in PIPELINES:
        spec = yaml.safe_load(dvc_file.read_text())
        for name, stage in spec["stages"].items():
            body, item = (stage["do"], "x") if "foreach" in stage else (stage, None)
            cmd = " ".join(str(body["cmd"]).split())
            if not cmd.startswith("seglab"):
                continue
            if "foreach" in stage:
                cmd = cmd.replace("${item}", _first_item(dvc_file, stage["foreach"]) or item)
            cmd = re.sub(r"\$\{[^}]+\}", "1", cmd)
            base = (dvc_file.parent / body.get("wdir", ".")).resolve()  # deps are wdir-relative
            deps = [str((base / str(d)).resolve().relative_to(ROOT)) for d in body.get("deps", [])
                    if "${" not in str(d)]  # fmt: skip
            yield f"{dvc_file.relative_to(ROOT)}:{name}", cmd, deps


def _first_item(dvc_file: Path, foreach: str) -> str | None:
    """The first value a ``foreach: ${section.key}`` iterates over, from the params file."""
    match = re.fullmatch(r"\$\{([\w.]+)\}", str(foreach))
    if not match:
        return None
    params_file = dvc_file.parent / "params.yaml"
    value: object = yaml.safe_load(params_file.read_text())
    for key in match[1].split("."):
        value = value[key]  # type: ignore[index]
    return str(value[0])  # type: ignore[index]


@pytest.mark.parametrize(("stage", "cmd", "deps"), list(stages()), ids=lambda v: str(v)[:60])
def test_deps_cover_every_source_file_the_command_imports(
    stage: str, cmd: str, deps: list[str]
) -> None:
    needed = closure(command_modules(cmd))
    covered = [(ROOT / d).resolve() for d in deps]
    missing = sorted(
        str(f.relative_to(ROOT))
        for f in needed
        if not any(f == c or c in f.parents for c in covered)
    )
    assert missing == [], f"{stage}: deps miss {missing}"


def test_the_closure_follows_imports_inside_functions() -> None:
    files = closure(command_modules("seglab acdcseg build --params params.yaml"))
    names = {str(f.relative_to(SRC)) for f in files}
    # imported inside build_acdcseg, and by what it imports
    assert {"seglab/inference/segment.py", "seglab/training/fit.py"} <= names
