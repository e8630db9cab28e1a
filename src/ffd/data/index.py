"""Find the split and class folders (or the Kaggle CSVs) under a data root and list the image files.

The Kaggle "140k real and fake faces" download nests its splits as
``<root>/real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}/*.jpg`` with ``train.csv``,
``valid.csv`` and ``test.csv`` at ``<root>``; we accept that, a folder holding the split folders
directly, and ``real_faces/`` / ``fake_faces/`` class folders. Files that are empty or not images
(magic bytes) are dropped here and listed; files that only fail when decoded are handled by the
dataset. Labels: 0 = real, 1 = fake. The Kaggle CSVs' numeric ``label`` is the opposite (1 = real),
so only their ``label_str`` column is used.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from ffd import LABELS
from ffd.data.layout import (
    CLASS_DIRS,
    EXPECTED_LAYOUT,
    SPLIT_DIRS,
    SPLITS,
    _match,
    _subdirs,
    _warn_about_unread_class_folders,
    find_data_root,
    log,
)
from ffd.errors import DatasetLayoutError
from ffd.images import EMPTY_FILE, IMAGE_SUFFIXES, NOT_REGULAR, looks_like_image, not_an_image, walk_files


@dataclass
class DatasetIndex:
    root: Path  # the folder that holds the split folders (or the class folders read as the test split)
    samples: dict[str, list[tuple[str, int]]]  # split -> [(absolute path, label)]
    skipped_by_split: dict[str, list[tuple[str, str]]]  # split -> [(path, reason)] found at index time
    source: str  # "folders", "csv", or "class folders, read as the test split"

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """Every file skipped at index time, all splits."""
        return [item for split in SPLITS for item in self.skipped_by_split.get(split, [])]

    @property
    def skipped_per_split(self) -> dict[str, int]:
        return {split: len(self.skipped_by_split.get(split, [])) for split in SPLITS}

    def counts(self) -> dict[str, dict[int, int]]:
        """Images per split and label, zeros included."""
        return {
            split: {label: sum(1 for _, y in self.samples.get(split, []) if y == label) for label in LABELS}
            for split in SPLITS
        }

    def require(self, splits: Sequence[str] = SPLITS, one_class_will_do: Sequence[str] = ()) -> None:
        """Raise one DatasetLayoutError listing every empty split among `splits`, and every missing class of
        those not in `one_class_will_do`."""
        counts = self.counts()
        problems = []
        for split in splits:
            if counts[split][0] + counts[split][1] == 0:
                problems.append(f"split '{split}' is empty")
            elif split not in one_class_will_do:
                problems += [
                    f"split '{split}' has no {LABELS[y]} images" for y in LABELS if not counts[split][y]
                ]
        if problems:
            found = "; ".join(
                f"{s}: {counts[s][0]} real, {counts[s][1]} fake, {self.skipped_per_split.get(s, 0)} skipped"
                for s in SPLITS
            )
            raise DatasetLayoutError(
                f"{self.root} (read from {self.source}): {', '.join(problems)}. Found {found}. "
                f"{EXPECTED_LAYOUT}"
            )


def _scan_folders(splits: dict[str, Path], class_dirs: Mapping) -> dict[str, list[tuple[str, str | int]]]:
    """split -> [(path, label)] for every file under each class folder (recursive, sorted)."""
    listed: dict[str, list[tuple[str, str | int]]] = {}
    for split, split_path in splits.items():
        for class_path in _subdirs(split_path):
            for label in _match(class_path.name, class_dirs):
                listed.setdefault(split, []).extend((str(path), label) for path in walk_files(class_path))
    return listed


def _find_csvs(root: Path, data_root: Path | None, split_dirs: Mapping) -> dict[str, Path]:
    """split -> CSV file, looked for in the given root and every folder down to the data root."""
    folders = [root]
    if data_root is not None and data_root.is_relative_to(root):
        for part in data_root.relative_to(root).parts:
            folders.append(folders[-1] / part)
    found: dict[str, Path] = {}
    for folder in folders:
        for split, names in split_dirs.items():
            for name in names:
                if split not in found and (folder / f"{name}.csv").is_file():
                    found[split] = folder / f"{name}.csv"
    return found


def _read_csv(csv_path: Path, bases: Sequence[Path], class_dirs: Mapping) -> list[tuple[str, str | int]]:
    """Rows -> (absolute path, label from `label_str`, never the inverted numeric label, or a reason).

    Paths are relative to the first of `bases` in which the first row's file exists.
    """
    names = {name.lower(): label for label, choices in class_dirs.items() for name in choices}
    names.update({name: label for label, name in LABELS.items()})
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    first = next((row["path"] for row in rows if row.get("path")), None)
    base = next((b for b in bases if first and (b / first).exists()), bases[0])
    listed: list[tuple[str, str | int]] = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        path, label = row.get("path"), row.get("label_str")
        if not path or label is None:  # a short or cut row: listed, not fatal
            listed.append((f"{csv_path}:{line}", "incomplete row (no path or no label_str)"))
            continue
        listed.append(
            (
                os.path.abspath(base / path),
                names.get(label.strip().lower(), f"unknown label_str '{label}' in {csv_path}"),
            )
        )
    return listed


def _has_kaggle_columns(csv_path: Path) -> bool:
    with open(csv_path, newline="") as handle:
        return {"path", "label_str"} <= set(next(csv.reader(handle), ()))


def _csvs_resolve(listed: dict[str, list[tuple[str, str | int]]], sample: int = 20) -> bool:
    """Auto mode's test: the first complete rows of every CSV point at existing files."""
    complete = {
        split: [path for path, label in rows if isinstance(label, int)] for split, rows in listed.items()
    }
    return bool(listed) and all(
        os.path.exists(path) for paths in complete.values() for path in paths[:sample]
    )


def _why_not_image(path: str) -> str | None:
    """None for a plausible image; else the reason it is skipped."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        return not_an_image(suffix)
    try:
        status = os.stat(path)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if not stat.S_ISREG(status.st_mode):  # opening a named pipe would wait forever
        return NOT_REGULAR
    if status.st_size == 0:
        return EMPTY_FILE
    if looks_like_image(path):
        return None
    return not_an_image() if os.access(path, os.R_OK) else "cannot be read (Permission denied)"


def check_root(root: str | Path | None) -> None:
    """Raise DatasetLayoutError unless ``root`` is an existing folder (checked before any slow work)."""
    if root is None or not Path(root).is_dir():
        where = "is not set" if root is None else f"'{root}' is not an existing folder"
        raise DatasetLayoutError(
            f"data.root {where}. Point it at the unpacked dataset, e.g. `data=kaggle "
            "data.root=/path/to/140k-real-and-fake-faces`, or use the generated demo set: `data=synthetic`. "
            f"{EXPECTED_LAYOUT}"
        )


def index_dataset(
    root: str | Path | None,
    split_dirs: Mapping[str, Sequence[str]] | None = None,
    class_dirs: Mapping[int, Sequence[str]] | None = None,
    use_csv: str | bool = "auto",
) -> DatasetIndex:
    """List (path, label) per split under `root`; empty, missing and non-image files are skipped and listed.

    `split_dirs` maps ffd's split names (train, val, test) to accepted folder names, `class_dirs` maps
    labels (0 real, 1 fake) to accepted folder names; matching is case-insensitive. `use_csv`: "auto"
    reads the Kaggle CSVs when present and their paths resolve, True requires them, False scans folders.
    """
    check_root(root)
    if use_csv not in ("auto", True, False):
        raise ValueError(f"data.use_csv must be auto, true or false (got {use_csv!r}).")
    root = Path(root).absolute()
    split_dirs = {s: tuple(v) for s, v in (split_dirs or SPLIT_DIRS).items()}
    class_dirs = {int(k): tuple(v) for k, v in (class_dirs or CLASS_DIRS).items()}
    unknown = set(split_dirs) - set(SPLITS)
    if unknown or set(class_dirs) != set(LABELS):
        raise ValueError(f"split_dirs keys must be among {SPLITS} and class_dirs keys exactly 0 and 1.")

    try:
        data_root, split_paths = find_data_root(root, split_dirs, class_dirs)
    except DatasetLayoutError:
        if any(_match(folder.name, class_dirs) for folder in _subdirs(root)):
            # Class folders with no split above them: a set to evaluate on (faces of another generator).
            data_root, split_paths = root, {"test": root}
            if (named := _match(root.name, split_dirs)) and named != ["test"]:
                log.warning(
                    "%s is named like a %s split and is read as the test split; to test on its data set's "
                    "own test split, point data.root at %s.",
                    root,
                    named[0],
                    root.parent,
                )
        elif use_csv is False or not _find_csvs(root, None, split_dirs):
            raise
        else:
            data_root, split_paths = None, {}

    csvs = _find_csvs(root, data_root, split_dirs) if use_csv is not False else {}
    if use_csv is True and not (csvs and all(map(_has_kaggle_columns, csvs.values()))):
        raise DatasetLayoutError(
            f"{root}: data.use_csv=true needs {'/'.join(n + '.csv' for v in split_dirs.values() for n in v)} "
            "with 'path' and 'label_str' columns, here or in the folders down to the split folders; found "
            f"{[str(p) for p in csvs.values()] or 'none'}. Use data.use_csv=auto to scan folders."
        )
    listed = {
        split: _read_csv(path, [b for b in (data_root, path.parent) if b], class_dirs)
        for split, path in csvs.items()
        if _has_kaggle_columns(path)
    }
    source = "csv"
    if use_csv is False or (
        use_csv == "auto" and not (set(listed) >= set(split_paths) and _csvs_resolve(listed))
    ):
        if data_root is None:
            raise DatasetLayoutError(
                f"{root}: the CSVs' paths do not resolve and no split folders were found."
            )
        listed = _scan_folders(split_paths, class_dirs)
        _warn_about_unread_class_folders(split_paths, class_dirs)
        source = "class folders, read as the test split" if split_paths == {"test": root} else "folders"

    samples: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    skipped: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    total = sum(len(rows) for rows in listed.values())
    with Progress(disable=total < 5000, transient=True) as bar:
        task = bar.add_task(f"Checking {total} files", total=total)
        for split, rows in listed.items():
            for path, label in rows:
                reason = label if isinstance(label, str) else _why_not_image(path)
                if reason is None:
                    samples[split].append((path, label))
                else:
                    skipped[split].append((path, reason))
            bar.advance(task, len(rows))
    return DatasetIndex(data_root or root, samples, skipped, source)
