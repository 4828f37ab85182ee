"""One exception type for every input problem, so the CLI can print one clear line."""

from __future__ import annotations

from pathlib import Path


class SeglabError(Exception):
    """A problem the user can fix (bad input or setting): printed as one line, no traceback."""


class DataError(SeglabError):
    """A data file or folder is missing, corrupt or not what it claims to be.

    The message always starts with the offending path, then the problem.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(SeglabError):
    """params.yaml (or a command-line override) is invalid."""


class WorkerFinished(Exception):
    """Raised in a distributed training's worker process (global rank > 0) once its part of the
    training is done: rank 0 alone evaluates, logs, registers and writes outputs, so the worker
    leaves the stage here and the CLI exits 0."""
