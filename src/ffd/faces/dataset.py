"""Turn a user's folders of labelled photos into the Kaggle layout of aligned face crops (``ffd.align``).

Each face is found and aligned as ``ffd.predict`` aligns it (``ffd.faces.align``), so a detector trained on
the crops sees at training what it sees when judging a photo. Photos are labelled by the real/fake folder
they lie in (named as ``ffd.data.index`` names class folders) and split by photo, never by face: two faces
of one photo in train and test would leak. The run is resumable: manifest.csv says what is done, and a
photo whose crops are all there is not decoded again.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import track
from rich.table import Table
from rich.text import Text
from torchvision.io import encode_jpeg

from ffd import (
    LABELS,
    resolvers,  # noqa: F401  (run(cfg) resolves ${ffd.model_cache:})
)
from ffd import record as run_record
from ffd.data.index import CLASS_DIRS, SPLIT_DIRS, _match, _why_not_image
from ffd.errors import UnreadableImageError, UserError
from ffd.faces.align import FINDER_OPTIONS, AlignedFace, FaceFinder
from ffd.images import IMAGE_SUFFIXES, read_rgb, walk_files
from ffd.options import as_typed, count_problem
from ffd.outputs import make_output_dir, output_folder
from ffd.report import FILE_NAMES, write_bad_files
from ffd.segmentation.pipeline import model_file

MANIFEST = "manifest.csv"
BAD_FILES = "bad_files.txt"
FOLDERS = {"train": "train", "val": "valid", "test": "test"}  # ffd's split -> its folder, as Kaggle names it
DEFAULT_SPLIT = (0.8, 0.1, 0.1)  # ffd.train needs train, valid and test
MIN_SIZE = 32
# Both classes are re-encoded alike, so the codec (a GAN's PNG against a camera's JPEG) is no shortcut.
JPEG_QUALITY = 95
COLUMNS = (
    "crop", "source", "label", "split", "face", "x0", "y0", "x1", "y1",
    "m00", "m01", "m02", "m10", "m11", "m12",
)  # fmt: skip
OUTSIDE_CLASSES = "not inside a real or fake folder (real, real_faces, fake, fake_faces): label unknown"
OUTSIDE_SPLITS = "in a class folder outside the train/valid/test folders the rest of the input is split into"
COUNTS = ("photos", "faces", "existing", "no face", "unreadable")


class AlignError(UserError):
    """An ffd.align option or input that cannot be used; raised before any photo is aligned."""


@dataclass(frozen=True)
class Photo:
    """A source photo: where it is, its label, the split its folders name (or None), its crops' stem."""

    path: Path
    label: int
    split: str | None
    stem: str


def split_problem(value: Any) -> str | None:
    """Why ``value`` cannot be the split (null, or three non-negative shares summing to 1), or None."""
    numbers = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if value is None or (
        numbers is not None
        and len(numbers) == 3
        and all(isinstance(n, int | float) and not isinstance(n, bool) and n >= 0 for n in numbers)
        and math.isclose(sum(numbers), 1.0, abs_tol=1e-6)
    ):
        return None
    return (
        f"split={as_typed(value)} must be null (keep the input's train/valid/test folders, else "
        f"{list(DEFAULT_SPLIT)}) or three non-negative shares of train, valid and test summing to 1, "
        "e.g. split=[0.8,0.1,0.1]"
    )


def check_options(cfg: DictConfig) -> tuple[Path, Path]:
    """The input and output folders, once every option is known to be usable; one AlignError otherwise."""
    output = output_folder(cfg.output)
    source = Path(str(cfg.input))
    problems = [p for p in (count_problem(cfg.size, "size", MIN_SIZE), split_problem(cfg.split)) if p]
    problems += [p for p in [count_problem(cfg.seed, "seed", 0)] if p]
    if not str(cfg.input).strip() or not source.is_dir():
        problems.insert(0, f"input={cfg.input} is not an existing folder: point it at the folder holding "
                        "your real/ and fake/ photo folders")  # fmt: skip
    elif output.resolve().is_relative_to(source.resolve()):
        problems.insert(0, f"output={output} is inside input={source}: a rerun would take the crops for "
                        "photos; choose an output folder outside the input")  # fmt: skip
    if problems:
        raise AlignError(f"{'; '.join(problems)}.")
    return source, output


def _crop_stems(paths: Sequence[Path], root: Path) -> list[str]:
    """The path under ``root`` flattened into one file name without the suffix; with it where two would
    clash (a.jpg and a.png)."""
    stems = ["_".join(path.relative_to(root).with_suffix("").parts) for path in paths]
    clashes = {stem for stem, n in Counter(stems).items() if n > 1}
    return [
        "_".join(path.relative_to(root).parts).replace(".", "_") if stem in clashes else stem
        for path, stem in zip(paths, stems, strict=True)
    ]


def find_photos(root: Path) -> tuple[list[Photo], list[tuple[str, str]]]:
    """The photos in class folders at any depth under ``root`` (the innermost class folder labels a photo,
    a split folder above it splits it), and the image files skipped, with why. Files that are no image by
    their first bytes are skipped here, as the data index skips them, so they take no place in a split."""
    paths = [path for path in walk_files(root) if path.suffix.lower() in IMAGE_SUFFIXES]
    found, skipped = [], []
    for path, stem in zip(paths, _crop_stems(paths, root), strict=True):
        folders = path.relative_to(root).parts[:-1]
        classes = [(at, label) for at, name in enumerate(folders) for label in _match(name, CLASS_DIRS)]
        reason = OUTSIDE_CLASSES if not classes else _why_not_image(str(path))
        if reason:
            skipped.append((str(path.absolute()), reason))
            continue
        at, label = classes[-1]
        splits = [_match(name, SPLIT_DIRS)[0] for name in folders[:at] if _match(name, SPLIT_DIRS)]
        found.append(Photo(path.absolute(), label, splits[-1] if splits else None, stem))
    if any(photo.split for photo in found):
        skipped += [(str(photo.path), OUTSIDE_SPLITS) for photo in found if photo.split is None]
        found = [photo for photo in found if photo.split]
    return found, skipped


def assign_splits(
    photos: Sequence[Photo], ratios: Sequence[float], seed: int, earlier: dict[str, str]
) -> dict[Path, str]:
    """Photo -> split: the input's folders when it has them, else a seeded shuffle of each class cut by
    ``ratios`` (so both classes reach every split they can); a photo aligned by an earlier run into the
    same output keeps that run's split (``earlier``), so that a rerun never puts its faces in two splits."""
    if any(photo.split for photo in photos):
        return {photo.path: photo.split for photo in photos}
    shuffle = random.Random(seed)
    splits: dict[Path, str] = {}
    for label in LABELS:
        members = sorted(photo.path for photo in photos if photo.label == label)
        shuffle.shuffle(members)
        train = round(len(members) * ratios[0])
        val = min(round(len(members) * ratios[1]), len(members) - train)
        for at, path in enumerate(members):
            splits[path] = "train" if at < train else "val" if at < train + val else "test"
    folder_split = {folder: split for split, folder in FOLDERS.items()}
    return {path: folder_split.get(earlier.get(str(path), ""), split) for path, split in splits.items()}


def read_manifest(output: Path) -> dict[str, dict[str, str]]:
    """An earlier run's manifest rows (crop -> row) of the photos whose crops are all still there; a photo
    with a crop deleted since is aligned again."""
    path = output / MANIFEST
    if not path.is_file():
        return {}
    with path.open(newline="", errors=FILE_NAMES) as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("crop") and row.get("source")]
    missing = {row["source"] for row in rows if not (output / row["crop"]).is_file()}
    return {row["crop"]: row for row in rows if row["source"] not in missing}


def write_manifest(output: Path, rows: dict[str, dict[str, str]]) -> None:
    """Written whole, through a temporary file: a run stopped while writing keeps the earlier manifest."""
    partial = output / f".{MANIFEST}.partial"
    with partial.open("w", newline="", errors=FILE_NAMES) as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows[crop] for crop in sorted(rows))
    os.replace(partial, output / MANIFEST)


def _write_crop(path: Path, image: torch.Tensor) -> None:
    """The JPEG through a temporary file: a crop that exists is whole, so a rerun may trust it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(encode_jpeg(image, quality=JPEG_QUALITY).numpy().tobytes())
    os.replace(partial, path)


@dataclass
class Summary:
    """What a run did, per (split folder, class): photos, faces written, crops already there, no face,
    unreadable; the files skipped; the manifest's rows."""

    output: Path
    counts: dict[tuple[str, str], Counter] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    complete: bool = False

    def add(self, split: str, label: int, what: str, n: int = 1) -> None:
        self.counts.setdefault((FOLDERS[split], LABELS[label]), Counter())[what] += n

    def notes(self) -> list[str]:
        """The splits and classes with no crop: ffd.train needs both classes in train, valid and test."""
        held = Counter((row["split"], row["label"]) for row in self.rows.values())
        missing = [f"{split}/{name}" for split in FOLDERS.values() for name in LABELS.values()
                   if not held[split, name]]  # fmt: skip
        if not missing:
            return []
        return [
            f"No crops in {', '.join(missing)}: ffd.train needs real and fake crops in train, valid and "
            "test; add photos, or set split= to share them differently."
        ]

    def print(self, console: Console) -> None:
        table = Table(
            title="ffd.align",
            caption="faces: crops written now; existing: crops already there, kept; no face, unreadable: "
            "photos skipped",
        )
        for column in ("split", "class", *COUNTS):
            table.add_column(column, justify="left" if column in ("split", "class") else "right")
        for split in FOLDERS.values():
            for name in LABELS.values():
                counts = self.counts.get((split, name), Counter())
                table.add_row(split, name, *(str(counts[what]) for what in COUNTS))
        console.print(table)
        for note in self.notes():
            console.print(Text(note))
        if self.skipped:
            skipped = f"{len(set(self.skipped))} file(s) skipped, listed in {self.output / BAD_FILES}"
            console.print(Text(skipped), soft_wrap=True)
        console.print(Text(f"{len(self.rows)} crops, listed in {self.output / MANIFEST}"), soft_wrap=True)

    def log(self, source: Path) -> None:
        """One line for the run's log file (align.log), which the console's table does not reach."""
        totals = sum(self.counts.values(), Counter())
        run_record.info(
            "ffd.align%s: input %s; %s; %d files skipped; %d crops in %s",
            "" if self.complete else " (stopped early)",
            source.absolute(),
            ", ".join(f"{what} {totals[what]}" for what in COUNTS),
            len(set(self.skipped)),
            len(self.rows),
            self.output.absolute(),
        )


def _row(crop: str, photo: Photo, split: str, face: AlignedFace) -> dict[str, str]:
    numbers = [*face.box, *face.matrix.reshape(-1).tolist()]
    values = [crop, str(photo.path), LABELS[photo.label], FOLDERS[split], str(face.index)]
    return dict(zip(COLUMNS, values + [repr(float(n)) for n in numbers], strict=True))


def align_photos(
    photos: Sequence[Photo],
    splits: dict[Path, str],
    finder: FaceFinder,
    summary: Summary,
    console: Console,
) -> None:
    """Find, align and write every face of every photo, into ``summary``; a photo whose crops from an
    earlier run are all there is not decoded again."""
    done = Counter(row["source"] for row in summary.rows.values())
    for photo in track(photos, description="align", console=console, transient=True):
        split = splits[photo.path]
        summary.add(split, photo.label, "photos")
        if done[str(photo.path)]:
            summary.add(split, photo.label, "existing", done[str(photo.path)])
            continue
        try:
            search = finder.find(read_rgb(photo.path))
        except UnreadableImageError as error:
            summary.skipped.append((str(photo.path), error.reason))
            summary.add(split, photo.label, "unreadable")
            continue
        if not search.faces:
            summary.skipped.append((str(photo.path), search.reason or "no face found"))
            summary.add(split, photo.label, "no face")
        for face in search.faces:
            crop = f"{FOLDERS[split]}/{LABELS[photo.label]}/{photo.stem}_f{face.index}.jpg"
            if (summary.output / crop).is_file():
                summary.add(split, photo.label, "existing")
            else:
                _write_crop(summary.output / crop, face.image)
                summary.add(split, photo.label, "faces")
            summary.rows[crop] = _row(crop, photo, split, face)


def run(cfg: DictConfig, console: Console | None = None) -> Summary:
    """The whole command: check the options, find the photos, align them; manifest.csv, bad_files.txt and
    the log line are written also when the run stops early."""
    console = console or Console()
    source, output = check_options(cfg)
    photos, skipped = find_photos(source)
    if not photos:
        elsewhere = f" ({len(skipped)} image files outside them)" if skipped else ""
        raise AlignError(
            f"input={source} holds no photo in a real or fake folder{elsewhere}. "
            "Put the photos in PHOTOS/real/ and PHOTOS/fake/ (at any depth, or under train/valid/test "
            "folders to keep that split), then point input= at PHOTOS."
        )
    if cfg.split is not None and any(photo.split for photo in photos):
        raise AlignError(
            f"input={source} is already split into train/valid/test folders, and split={as_typed(cfg.split)} "
            "would share its photos out again. Leave split out (null) to keep the input's split."
        )
    landmarker = model_file(cfg, "face_landmarker.task")  # before any work: a missing file is one error
    make_output_dir(output)
    summary = Summary(output, skipped=list(skipped), rows=read_manifest(output))
    earlier = {row["source"]: row["split"] for row in summary.rows.values()}
    splits = assign_splits(photos, cfg.split or DEFAULT_SPLIT, cfg.seed, earlier)
    options = {key: cfg.face[key] for key in FINDER_OPTIONS}
    try:
        with FaceFinder(landmarker, cfg.size, **options) as finder:
            align_photos(photos, splits, finder, summary, console)
        summary.complete = True
    finally:
        write_manifest(output, summary.rows)
        write_bad_files(output / BAD_FILES, summary.skipped)
        summary.log(source)
    summary.print(console)
    return summary
