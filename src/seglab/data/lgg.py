"""Reader for the LGG FLAIR-abnormality dataset (Buda et al. 2019, Kaggle "lgg-mri-segmentation").

Accepts the Kaggle zip as downloaded (``kaggle_3m/...``, also nested under
``lgg-mri-segmentation/`` or with the case folders at the top) or the extracted folder. Slices
are RGB TIFFs (pre-contrast, FLAIR, post-contrast); masks are single-channel 0/255 TIFFs and
come back as 0/1. Slice numbers are not zero-padded, so they are sorted as numbers.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from seglab.data.source import (
    Node,
    OpenedSource,
    list_dir,
    one_line,
    open_source,
    read_bytes,
    subdirs,
)
from seglab.errors import DataError

_CASE_DIR = re.compile(r"TCGA_[A-Za-z0-9]+_[A-Za-z0-9]+_\d{8}")
_SLICE_FILE = re.compile(r"(?P<case>.+)_(?P<number>\d+)(?P<mask>_mask)?\.tif", re.IGNORECASE)
_TIFF_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# Folder names of the Kaggle archive that lead to the case folders, in order of preference
# (the real download holds the cases twice: kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/).
_WRAPPERS = ("kaggle_3m", "lgg-mri-segmentation")


@dataclass(frozen=True)
class LggPatient:
    """One case folder: id like ``TCGA_CS_4941_19960909`` and its slice numbers in order."""

    id: str
    slice_numbers: tuple[int, ...]


@dataclass(frozen=True)
class LggVolume:
    """All slices of one case, stacked in slice order."""

    patient: str
    image: np.ndarray  # uint8 [n, H, W, 3]: pre-contrast, FLAIR, post-contrast
    mask: np.ndarray  # uint8 [n, H, W] in {0, 1}
    slice_numbers: tuple[int, ...]


class LggDataset(OpenedSource[LggPatient]):
    """An opened LGG source (``problems``: cases or a data.csv left out as malformed, when opened
    non-strict); use as a context manager so a zip gets closed.

    Args:
        table: data.csv's rows for the cases found here.
        csv_unmatched: data.csv ``Patient`` keys with no case folder here.
    """

    def __init__(
        self,
        root: Path,
        patients: list[LggPatient],
        folders: dict[str, Node],
        table: pd.DataFrame,
        problems: list[DataError],
        archive: zipfile.ZipFile | None,
        csv_unmatched: list[str] | None = None,
    ) -> None:
        super().__init__(root, patients, folders, problems, archive)
        self.table = table
        self.csv_unmatched = list(csv_unmatched or [])

    def load_slice(self, patient_id: str, number: int) -> tuple[np.ndarray, np.ndarray]:
        """One validated slice: image uint8 [H, W, 3] and mask uint8 [H, W] in {0, 1}."""
        folder = self._folders[self.patient(patient_id).id]
        image_node = folder / f"{patient_id}_{number}.tif"
        mask_node = folder / f"{patient_id}_{number}_mask.tif"
        image = _read_tif(image_node)
        if image.ndim != 3 or image.shape[2] != 3:
            raise DataError(
                str(image_node), f"expected an RGB image (H, W, 3), got shape {image.shape}"
            )
        mask = _read_tif(mask_node)
        if mask.ndim != 2:
            raise DataError(
                str(mask_node), f"expected a single-channel mask (H, W), got shape {mask.shape}"
            )
        if mask.shape != image.shape[:2]:
            raise DataError(
                str(mask_node),
                f"mask shape {mask.shape} differs from image shape {image.shape[:2]} "
                f"({image_node.name})",
            )
        bad = sorted(set(np.unique(mask).tolist()) - {0, 255})
        if bad:
            shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise DataError(str(mask_node), f"mask values must be 0 or 255, found {shown}")
        return image, (mask == 255).astype(np.uint8)

    def load(self, patient_id: str) -> LggVolume:
        """Every slice of a case, validated, stacked in numeric slice order."""
        numbers = self.patient(patient_id).slice_numbers
        images: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for number in numbers:
            image, mask = self.load_slice(patient_id, number)
            if images and image.shape != images[0].shape:
                raise DataError(
                    str(self._folders[patient_id] / f"{patient_id}_{number}.tif"),
                    f"shape {image.shape} differs from slice {numbers[0]} {images[0].shape}",
                )
            images.append(image)
            masks.append(mask)
        return LggVolume(patient_id, np.stack(images), np.stack(masks), numbers)


def open_lgg(path: str | Path, *, strict: bool = True) -> LggDataset:
    """Open the LGG zip or folder, pair every slice with its mask and read data.csv.

    ``strict`` (the default) raises on the first malformed case or a bad data.csv;
    ``strict=False`` leaves those out and records them in ``dataset.problems``.
    """
    root = Path(path)
    tree, archive = open_source(root)
    try:
        cases = _find_cases(tree)
        if cases is None:
            raise DataError(
                root,
                "not an LGG dataset: no TCGA_<inst>_<id>_<date> case folders "
                "(expected kaggle_3m/TCGA_.../ as in the Kaggle archive)",
            )
        patients: list[LggPatient] = []
        problems: list[DataError] = []
        folders = {d.name: d for d in subdirs(cases) if _is_case(d)}
        for case, folder in folders.items():
            try:
                patients.append(LggPatient(case, _slice_numbers(folder)))
            except DataError as exc:
                if strict:
                    raise
                problems.append(exc)
        unmatched: list[str] = []
        try:
            table, unmatched = _read_table(cases / "data.csv", [p.id for p in patients])
        except DataError as exc:
            if strict:
                raise
            problems.append(exc)
            table = pd.DataFrame()
    except BaseException:
        if archive is not None:
            archive.close()
        raise
    return LggDataset(root, patients, folders, table, problems, archive, unmatched)


def case_key(patient_id: str) -> str:
    """The data.csv ``Patient`` key of a case folder (its id without the date)."""
    return patient_id.rsplit("_", 1)[0]


def _find_cases(tree: Node) -> Node | None:
    """The folder holding the case folders: follow Kaggle's wrapper names or a lone sub-folder."""
    node = tree
    for _ in range(4):
        dirs = subdirs(node)
        if any(_is_case(d) for d in dirs):
            return node
        names = {d.name: d for d in dirs}
        lone = dirs[0] if len(dirs) == 1 else None
        found = next((names[n] for n in _WRAPPERS if n in names), lone)
        if found is None:
            return None
        node = found
    return None


def _is_case(node: Node) -> bool:
    return bool(_CASE_DIR.fullmatch(node.name))


def _slice_numbers(folder: Node) -> tuple[int, ...]:
    """Slice numbers of a case in numeric order, after checking every slice has a mask."""
    images: set[int] = set()
    masks: set[int] = set()
    for entry in list_dir(folder):
        if not entry.name.lower().endswith(".tif") or entry.is_dir():
            continue
        match = _SLICE_FILE.fullmatch(entry.name)
        if match is None or match["case"] != folder.name:
            raise DataError(
                str(entry), f"unexpected file name (expected {folder.name}_<n>[_mask].tif)"
            )
        (masks if match["mask"] else images).add(int(match["number"]))
    if not images and not masks:
        raise DataError(str(folder), "no slices (.tif files) in case folder")
    for missing, present, suffix, what in (
        (images - masks, "image", "_mask", "mask"),
        (masks - images, "mask", "", "image"),
    ):
        if missing:
            first = min(missing)
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(
                str(folder / f"{folder.name}_{first}{suffix}.tif"),
                f"missing {what} for slice {first}: the {present} exists but the {what} "
                f"does not{more}",
            )
    return tuple(sorted(images))


def _read_tif(node: Node) -> np.ndarray:
    """Decode a TIFF fully (PIL raises on truncation, where tifffile returns an empty array)."""
    if not node.is_file():
        raise DataError(str(node), "missing file")
    data = read_bytes(node)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(_NamedBytes(data, node.name)) as image:
                image.load()
                mode = image.mode
                array = np.asarray(image)
    except _TIFF_ERRORS as exc:
        raise DataError(str(node), f"unreadable TIFF ({one_line(exc)})") from None
    if array.dtype != np.uint8:
        raise DataError(str(node), f"expected 8-bit pixels, got mode {mode} ({array.dtype})")
    return array


class _NamedBytes(io.BytesIO):
    """Bytes read from a file, shown by the file's name: PIL puts the stream's repr in its
    messages (``cannot identify image file <_io.BytesIO object at 0x...>``)."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self._name = name

    def __repr__(self) -> str:
        return repr(self._name)


def _read_table(node: Node, patient_ids: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """data.csv restricted to the cases present (the Kaggle file lists all 110), and the
    ``Patient`` keys of the rows left out (no case folder here), in file order."""
    if not node.is_file():
        raise DataError(str(node), "missing data.csv")
    try:
        table = pd.read_csv(io.BytesIO(read_bytes(node)))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(str(node), f"unreadable CSV ({one_line(exc)})") from None
    if "Patient" not in table.columns:
        raise DataError(str(node), "no 'Patient' column")
    keys = {case_key(pid) for pid in patient_ids}
    present = table["Patient"].isin(keys)
    unmatched = [str(key) for key in table.loc[~present, "Patient"]]
    return table[present].reset_index(drop=True), unmatched
