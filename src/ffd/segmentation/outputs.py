"""The file names an ffd.segment run writes: <name>.png, <name>.json and <name>_labels.png per image, named
after the input and its sub-folders without meeting another image's or summary.json, and how to know an
earlier run's outputs in a folder so that they are not segmented again."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

LABELS_SUFFIX = "_labels.png"  # the label map of regions and parsing
OUTPUT_SUFFIXES = (".png", ".json", LABELS_SUFFIX)  # appended to an output name (output_names)
SUMMARY_FILE = Path("summary.json")  # the run's, so an image named summary.* keeps its full name


def add_suffix(name: Path, suffix: str) -> Path:
    """``name`` with ``suffix`` appended (x -> x.png, x_labels.png, x.json)."""
    return name.with_name(name.name + suffix)  # not Path.with_suffix: shot.v1 must not become shot.png


def output_files(name: Path) -> list[Path]:
    """Every file a run may write for the output name ``name``."""
    return [add_suffix(name, suffix) for suffix in OUTPUT_SUFFIXES]


def output_names(files: list[Path]) -> dict[Path, Path]:
    """Output name (to which .png, .json and _labels.png are appended) per input, mirroring sub-folders:
    x.jpg gives x, or x.jpg where another file's outputs would meet x's (x.png: x.jpg.png, x.png.png;
    x_labels.png beside x.png), or summary.jpg (summary.json is the run's).

    Paths are taken as given (absolute, not resolved): a symlinked image keeps the name of its link."""
    if not files:
        return {}
    absolute = {f: Path(os.path.abspath(f)) for f in files}
    root = Path(os.path.commonpath([path.parent for path in absolute.values()]))
    full = {f: path.relative_to(root) for f, path in absolute.items()}
    names = {f: name.with_suffix("") for f, name in full.items()}
    while True:  # a full name can meet another file's short name (x.jpg, and x.jpg.png's x.jpg)
        # counted once per pass: a folder may hold tens of thousands
        taken = Counter(output for name in names.values() for output in output_files(name))
        taken[SUMMARY_FILE] += 2
        clashes = [
            f
            for f, name in names.items()
            if name != full[f] and any(taken[o] > 1 for o in output_files(name))
        ]
        if not clashes:
            return names
        names.update((f, full[f]) for f in clashes)


def _is_segment_record(path: Path) -> bool:
    """Whether ``path`` is the JSON record an ffd.segment run writes per image."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable, not JSON (UnicodeDecodeError is a ValueError)
        return False
    return isinstance(content, dict) and {"file", "working_size", "faces"} <= content.keys()


def earlier_output(file: Path) -> bool:
    """Whether an ffd.segment run wrote ``file``: an annotated copy <name>.png or a label map
    <name>_labels.png with that run's record <name>.json beside it. A run whose output folder lies in its
    input folder must not take a previous run's outputs for photos (x.png giving x.png.png)."""
    return any(
        file.name.endswith(suffix)
        and _is_segment_record(file.with_name(file.name.removesuffix(suffix) + ".json"))
        for suffix in (LABELS_SUFFIX, ".png")
    )
