"""Walking a dataset that is a folder or a zip alike (shared by the ACDC and LGG readers).

Zip members are read in memory, never extracted; every I/O failure becomes a DataError
naming the file.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from seglab.errors import DataError

# A node of the dataset tree: a real path, or a member of an open zip (same interface).
Node = Path | zipfile.Path


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
