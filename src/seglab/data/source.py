"""Walking a dataset that is a folder or a zip alike (shared by the ACDC and LGG readers).

Zip members are read in memory, never extracted; every I/O failure becomes a DataError
naming the file.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from seglab.errors import DataError

# A node of the dataset tree: a real path, or a member of an open zip (same interface).
Node = Path | zipfile.Path


class HasId(Protocol):
    @property
    def id(self) -> str: ...


P = TypeVar("P", bound=HasId)


class OpenedSource(Generic[P]):
    """A dataset opened from a folder or a zip: its patients by id, each patient's folder, what
    was left out, and the archive to close (use as a context manager so a zip gets closed).

    Args:
        root: the folder or zip the dataset was opened from (named in errors).
        patients: the readable patients, kept sorted by id.
        folders: each patient id's folder node in the tree.
        problems: patients (or files) left out as malformed (only filled when opened non-strict).
        archive: the open zip, or None for a folder.
    """

    def __init__(
        self,
        root: Path,
        patients: list[P],
        folders: dict[str, Node],
        problems: list[DataError],
        archive: zipfile.ZipFile | None,
    ) -> None:
        self.root = root
        self.patients = sorted(patients, key=lambda p: p.id)
        self.problems = problems
        self._by_id = {p.id: p for p in self.patients}
        self._folders = folders
        self._archive = archive

    def patient(self, patient_id: str) -> P:
        """The patient with this id, or DataError if the source has none."""
        try:
            return self._by_id[patient_id]
        except KeyError:
            raise DataError(self.root, f"no patient {patient_id!r}") from None

    def close(self) -> None:
        """Close the zip archive, if any (idempotent)."""
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_source(path: str | Path) -> tuple[Node, zipfile.ZipFile | None]:
    """Return the root node of a folder or zip, and the open archive (to close) if it is a zip."""
    path = Path(path)
    if path.is_dir():
        tree: Node = path
        archive = None
    elif not path.exists():
        raise DataError(path, "does not exist")
    elif not zipfile.is_zipfile(path):
        is_zip = path.suffix.lower() == ".zip"
        raise DataError(
            path, "corrupt or truncated zip archive" if is_zip else "neither a folder nor a zip"
        )
    else:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(path, f"unreadable zip archive ({one_line(exc)})") from None
        tree = zipfile.Path(archive)
    if not list_dir(tree):
        if archive is not None:
            archive.close()
        raise DataError(path, "empty zip archive" if archive is not None else "empty folder")
    return tree, archive


def list_dir(node: Node) -> list[Node]:
    """Entries of a folder, without hidden files and macOS zip debris (``__MACOSX``)."""
    try:
        entries = list(node.iterdir())
    except OSError as exc:
        raise DataError(str(node), f"cannot list folder ({one_line(exc)})") from None
    return sorted(
        (e for e in entries if not e.name.startswith((".", "__MACOSX"))), key=lambda e: e.name
    )


def subdirs(node: Node) -> list[Node]:
    """Visible sub-folders of a folder, sorted by name."""
    return [e for e in list_dir(node) if e.is_dir()]


def read_bytes(node: Node) -> bytes:
    """Whole content of a file or zip member; I/O and zip CRC failures become DataError."""
    try:
        return node.read_bytes()
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DataError(str(node), f"cannot read file ({one_line(exc)})") from None


def one_line(exc: BaseException) -> str:
    """An exception's message on a single line (library messages sometimes span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__
