"""Where a data set's images are: the split and class folders below a root (possibly a few folders down, as
the unpacked Kaggle archive nests them), found by name, with a hint at what was found when they are not
there. ffd.data.index lists the files in them."""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from ffd import LABELS
from ffd.errors import DatasetLayoutError
from ffd.images import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")


SPLIT_DIRS: dict[str, tuple[str, ...]] = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}


CLASS_DIRS: dict[int, tuple[str, ...]] = {0: ("real", "real_faces"), 1: ("fake", "fake_faces")}


MAX_DEPTH = 4  # how far below the given root the split folders may be


CLASS_WORDS = {"real": 0, "reals": 0, "fake": 1, "fakes": 1}  # words that mark an unconfigured class folder


log = logging.getLogger(__name__)


EXPECTED_LAYOUT = (
    "Expected layout: ROOT/{train,valid|val,test}/{real|real_faces,fake|fake_faces}/*.jpg, possibly a few "
    "folders down (the unpacked Kaggle archive nests it as ROOT/real_vs_fake/real-vs-fake/...); label 0 = "
    "real, 1 = fake. Class folders directly in ROOT, with no split folders, are read as the test split "
    "(ffd.eval on another set)."
)


def _match(name: str, choices: Mapping) -> list:
    return [key for key, names in choices.items() if name.lower() in (n.lower() for n in names)]


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda entry: entry.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith((".", "__MACOSX"))]


def _splits_in(folder: Path, split_dirs: Mapping, class_dirs: Mapping) -> dict[str, Path]:
    """Split name -> folder for the children of `folder` that are split folders holding a class folder."""
    found: dict[str, list[Path]] = {}
    for child in _subdirs(folder):
        for split in _match(child.name, split_dirs):
            if any(_match(grandchild.name, class_dirs) for grandchild in _subdirs(child)):
                found.setdefault(split, []).append(child)
    for split, paths in found.items():
        if len(paths) > 1:
            raise DatasetLayoutError(
                f"{folder}: more than one folder for split '{split}' ({', '.join(p.name for p in paths)}); "
                "keep one, or name the one to use with data.split_dirs."
            )
    return {split: paths[0] for split, paths in found.items()}


def _named_like_class(name: str) -> int | None:
    """The label of a folder name holding exactly one real/fake word (0_real, Fake-images, RealFaces,
    fakes), so that the error can suggest data.class_dirs for it; None for real-vs-fake, unreal, photos."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)
    labels = {CLASS_WORDS[word.lower()] for word in words if word.lower() in CLASS_WORDS}
    return labels.pop() if len(labels) == 1 else None


def _class_like(folders: Sequence[Path], class_dirs: Mapping) -> list[Path]:
    """The folders named as a class in `class_dirs`, or named like one."""
    return [f for f in folders if _match(f.name, class_dirs) or _named_like_class(f.name) is not None]


def _some(items: Sequence[object], limit: int = 6) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _hydra_string(name: str) -> str:
    """A folder name as a Hydra override value: bare when it is one word, else double-quoted."""
    return name if re.fullmatch(r"\w+", name) else '"' + name.replace('"', '\\"') + '"'


def _shallowest_class_folders(root: Path, class_dirs: Mapping) -> list[Path]:
    """The class-like folders at the first depth (at most MAX_DEPTH + 1 below `root`) that has any."""
    level = [root]
    for _ in range(MAX_DEPTH + 1):
        level = [child for folder in level for child in _subdirs(folder)]
        if classes := _class_like(level, class_dirs):
            return classes
    return []


def _class_dirs_override(classes: Sequence[Path], class_dirs: Mapping) -> str | None:
    """The data.class_dirs override that reads the class-like folders among `classes` that `class_dirs`
    does not name (a label with none keeps its names), or None when it names them all."""
    unread = {
        label: sorted(
            {f.name for f in classes if not _match(f.name, class_dirs) and _named_like_class(f.name) == label}
        )
        for label in LABELS
    }
    if not any(unread.values()):
        return None
    names = {label: unread[label] or class_dirs[label] for label in LABELS}
    mapping = ",".join(f"{label}:[{','.join(map(_hydra_string, names[label]))}]" for label in LABELS)
    return f"data.class_dirs={{{mapping}}}"


def _warn_about_unread_class_folders(split_paths: Mapping[str, Path], class_dirs: Mapping) -> None:
    """Name the folders in a split folder that look like a class but are not read: ROOT/{real,fakes}
    would otherwise be tested as reals alone, without a word."""
    unread = [
        folder
        for split_path in dict.fromkeys(split_paths.values())
        for folder in _class_like(_subdirs(split_path), class_dirs)
        if not _match(folder.name, class_dirs)
    ]
    if unread:
        log.warning(
            "Not read, though named like class folders: %s (data.class_dirs names %s). To read them, run "
            "with %s.",
            _some([str(folder) for folder in unread]),
            "; ".join(f"{LABELS[label]}: {', '.join(names)}" for label, names in class_dirs.items()),
            shlex.quote(_class_dirs_override(unread, class_dirs) or ""),
        )


def _image_counts(root: Path) -> list[tuple[Path, int]]:
    """(folder, image files in it) for root and its sub-folders down to MAX_DEPTH levels, shallowest first."""
    counts, level = [], [root]
    for _ in range(MAX_DEPTH + 1):
        for folder in level:
            try:
                with os.scandir(folder) as entries:
                    images = sum(
                        e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in entries
                    )
            except OSError:  # unreadable: _subdirs skips it too
                continue
            if images:
                counts.append((folder, images))
        level = [sub for folder in level for sub in _subdirs(folder)]
    return counts


def _layout_hint(root: Path, split_dirs: Mapping, class_dirs: Mapping) -> str:
    """Why no split folders were found, with the fix: the shallowest class folders and the overrides that
    read them, else the image files lying directly in `root` and the command for unlabelled images."""
    classes = _shallowest_class_folders(root, class_dirs)
    if not classes:
        images = _image_counts(root)
        if not images:
            return ""
        where = [
            f"{n} directly" if f == root else f"{n} in {f.relative_to(root).as_posix()}" for f, n in images
        ]
        predict = f"python -m ffd.predict {shlex.quote(f'input={root}')} model=CHECKPOINT"
        return (
            f"{root} holds {sum(n for _, n in images)} image files ({_some(where)}) and no class folders: "
            "ffd.eval needs its images in real/ and fake/ folders; for verdicts on unlabelled images run "
            f"`{predict}` (a .ckpt from ffd.train or an .onnx from ffd.export). "
        )
    # Split folders are found from root, wherever they are; class folders elsewhere are read from their own.
    roots = sorted({root if _match(f.parent.name, split_dirs) else f.parent for f in classes})
    overrides = [f"data.root={roots[0]}"] if roots != [root] else []
    if class_dirs_override := _class_dirs_override(classes, class_dirs):
        overrides.append(class_dirs_override)
    found = f"Found class folders {_some([f.relative_to(root).as_posix() for f in classes])}"
    if not overrides:
        return f"{found}. "
    which = "them" if len(roots) == 1 else f"those in the first of the {len(roots)} folders holding them"
    return f"{found}; to read {which}, run with `{' '.join(map(shlex.quote, overrides))}`. "


def find_data_root(root: Path, split_dirs: Mapping, class_dirs: Mapping) -> tuple[Path, dict[str, Path]]:
    """Breadth-first search (sorted, so deterministic) for the shallowest folder holding split folders."""
    level, depth = [root], 0
    while level and depth <= MAX_DEPTH:
        hits = [
            (folder, splits) for folder in level if (splits := _splits_in(folder, split_dirs, class_dirs))
        ]
        if len(hits) > 1:
            raise DatasetLayoutError(
                f"{root}: several folders hold split folders at the same depth: "
                f"{', '.join(str(folder) for folder, _ in hits)}. Point data.root at the one to use."
            )
        if hits:
            folder, splits = hits[0]
            if stray := _class_like(_subdirs(folder), class_dirs):
                log.warning(
                    "%s: %s, next to the split folders, look like class folders but are not read: only "
                    "class folders inside a split folder (%s) are. Move their images into a split's class "
                    "folder to use them.",
                    folder,
                    _some([f.name for f in stray]),
                    _some([path.name for path in splits.values()]),
                )
            return folder, splits
        level, depth = [sub for folder in level for sub in _subdirs(folder)], depth + 1
    raise DatasetLayoutError(
        f"{root}: no split folders found within {MAX_DEPTH} levels. "
        f"{_layout_hint(root, split_dirs, class_dirs)}{EXPECTED_LAYOUT}"
    )
