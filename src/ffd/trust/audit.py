"""Does the file itself tell real from fake? A shortcut audit of a data set's file headers.

A detector can learn the file instead of the face: reals saved as PNG and fakes as JPEG, two JPEG
qualities, sizes, chroma subsamplings, or EXIF on one class only. Per split, this reads the headers of (a
sample of) each class's files, never their pixels (Pillow's ``Image.open`` is lazy), and measures how well
each property alone separates the classes: the AUROC of the property as a score, direction ignored
(max(auc, 1 - auc); 0.5 = not at all, 1 = perfectly). Numbers (JPEG quality, width, height, bytes per
pixel) are scored by rank, categories (format, chroma subsampling, EXIF) by the share of fakes in their
category. A property above ``warn_above`` (0.7) is a shortcut, and its warning names the fix.

JPEG quality is the IJG quality whose standard luminance table (JPEG Annex K, scaled as libjpeg, Pillow
and torchvision scale it) is closest to the file's; quality and subsampling are compared among JPEG files
only (a PNG has neither, and the format row already shows a PNG/JPEG split). ``python -m ffd.audit`` prints
the table and writes audit.json; ffd.train runs it on the train split's headers before fitting.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, JpegImagePlugin
from rich.progress import Progress
from rich.table import Table
from torchmetrics.functional import classification as tmf

from ffd import LABELS
from ffd.data.index import SPLITS, DatasetIndex, index_dataset

log = logging.getLogger(__name__)

WARN_ABOVE = 0.7
TRAINING_START_FILES = 200  # per class of the train split, read by ffd.train before fitting
PROGRESS_FROM = 1000  # files: fewer are read before a bar would be worth drawing
SHOWN_UNREADABLE = 5  # in the table's caption; audit.json lists them all
# The JPEG standard's luminance quantisation table (ITU T.81 Annex K.1), natural order as Pillow gives it.
IJG_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}  # JpegImagePlugin.get_sampling's codes
JPEG_FORMATS = ("JPEG", "MPO")  # Pillow opens a JPEG with extra frames (phone photos) as MPO
REENCODE = "re-encode both classes alike, e.g. all to JPEG quality 95, 4:2:0, at one size"
# name -> (what the table calls it, "number" or "category", the fix)
PROPERTIES: dict[str, tuple[str, str, str]] = {
    "format": ("file format", "category", f"{REENCODE} (PIL: image.save(path, 'JPEG', quality=95))"),
    "jpeg_quality": ("JPEG quality", "number", f"{REENCODE}; re-encode from the originals where you can"),
    "subsampling": ("chroma subsampling", "category", f"{REENCODE} (PIL: save(..., subsampling=2))"),
    "width": ("width", "number", "resize both classes to one size (e.g. 256x256) before encoding"),
    "height": ("height", "number", "resize both classes to one size (e.g. 256x256) before encoding"),
    "bytes_per_pixel": ("bytes per pixel", "number", REENCODE),
    "exif": (
        "EXIF",
        "category",
        "strip EXIF from both classes (PIL: save without exif=), or keep it on both",
    ),
}
ENCODING = ("format", "jpeg_quality", "subsampling", "width", "height")
FINE_DETAIL = (
    "the other rows match, so the classes differ in fine detail (noise, sharpness, or the generator's own "
    "trace), which makes one class compress worse: re-encoding alike will not remove it; look at what the "
    "detector attends to (ffd.eval explain=true)"
)


@cache
def ijg_tables() -> np.ndarray:
    """(100, 64): the luminance table libjpeg writes for quality 1..100 (baseline: values clamped to 255)."""
    base = np.array(IJG_LUMINANCE, dtype=np.int64).reshape(-1)
    quality = np.arange(1, 101)[:, None]
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    return np.clip((base * scale + 50) // 100, 1, 255)


def estimate_quality(luminance: Sequence[int]) -> int:
    """The IJG quality (1..100) whose scaled standard table is closest to ``luminance`` (64 values, natural
    order). Exact for files written by libjpeg (Pillow, torchvision, OpenCV); the nearest for others."""
    table = np.asarray(luminance, dtype=np.int64).reshape(-1)
    if table.size != 64:
        raise ValueError(f"a quantisation table has 64 values, not {table.size}")
    return int(np.abs(ijg_tables() - table).sum(axis=1).argmin()) + 1


def _subsampling(image: Image.Image) -> str:
    code = JpegImagePlugin.get_sampling(image)
    return SUBSAMPLING.get(code, "grey" if len(image.getbands()) == 1 else "other")


def read_header(path: str) -> dict[str, Any]:
    """The audited properties of one file, from its header alone; quality and subsampling None unless JPEG.

    Raises OSError (Pillow's UnidentifiedImageError is one), SyntaxError, ValueError or
    Image.DecompressionBombError for a file whose header cannot be read."""
    with Image.open(path) as image:
        width, height = image.size
        if not width * height:
            raise ValueError("zero-size image")
        jpeg = image.format in JPEG_FORMATS
        tables = (getattr(image, "quantization", None) or {}) if jpeg else {}
        return {
            "format": image.format or "unknown",
            "jpeg_quality": estimate_quality(tables[0]) if 0 in tables else None,
            "subsampling": _subsampling(image) if jpeg else None,
            "width": width,
            "height": height,
            "bytes_per_pixel": os.path.getsize(path) / (width * height),
            "exif": "exif" in image.info,  # a PNG's eXIf chunk after its pixels is not seen
        }


def separation(real: Sequence[Any], fake: Sequence[Any], kind: str) -> float | None:
    """How well the property alone tells the classes apart: max(AUROC, 1 - AUROC), 0.5 for a constant;
    None when a class has no value (no files, or no JPEG for a JPEG-only property)."""
    real, fake = [v for v in real if v is not None], [v for v in fake if v is not None]
    if not real or not fake:
        return None
    values, labels = real + fake, torch.tensor([0] * len(real) + [1] * len(fake))
    if kind == "category":  # each category scored by its share of fakes
        scores = [fake.count(value) / values.count(value) for value in values]
    else:  # ranks, ties kept: torchmetrics reads scores outside [0, 1] as logits
        _, ranks = np.unique(values, return_inverse=True)
        scores = ranks / max(ranks.max(), 1)
    auroc = tmf.binary_auroc(torch.as_tensor(scores, dtype=torch.float64), labels).item()
    return max(auroc, 1 - auroc)


def _shown(name: str, value: Any) -> str:
    if name == "jpeg_quality":
        return f"q{value:.0f}"
    if name == "bytes_per_pixel":
        return f"{value:.3g}"
    if name == "exif":
        return "yes" if value else "no"
    return f"{value:.0f}" if isinstance(value, int | float) else str(value)


def describe(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """One class's values of a property: the table's text (a number's median [5th-95th percentile], a
    category's shares) and audit.json's entry."""
    present = [v for v in values if v is not None]
    missing = f"; {len(values) - len(present)} not JPEG" if len(present) < len(values) else ""
    if not present:
        return "n/a" + missing, {"files": 0}
    if PROPERTIES[name][1] == "category":
        counts = Counter(present).most_common()
        text = ", ".join(f"{_shown(name, v)} {n / len(present):.0%}" for v, n in counts[:3])
        more = f", {len(counts) - 3} more" if len(counts) > 3 else ""
        return text + more + missing, {
            "files": len(present),
            "counts": {_shown(name, v): n for v, n in counts},
        }
    low, median, high = np.percentile(present, [5, 50, 95])
    entry = {"files": len(present), "median": median, "p5": low, "p95": high}
    entry |= {"min": min(present), "max": max(present)}
    spread = "" if low == high else f" [{_shown(name, low)}–{_shown(name, high)}]"
    return _shown(name, median) + spread + missing, entry


def sample(
    index: DatasetIndex, splits: Sequence[str], per_class: int | None, seed: int
) -> dict[str, dict[int, list[str]]]:
    """split -> label -> the paths to read: all of them, or ``per_class`` drawn with ``seed`` (sorted)."""
    draw = random.Random(seed)
    chosen: dict[str, dict[int, list[str]]] = {}
    for split in splits:
        for label in LABELS:
            paths = [path for path, y in index.samples.get(split, []) if y == label]
            if per_class is not None and len(paths) > per_class:
                paths = sorted(draw.sample(paths, per_class))
            chosen.setdefault(split, {})[label] = paths
    return chosen


def audit_index(
    index: DatasetIndex,
    splits: Sequence[str] = SPLITS,
    per_class: int | None = 2000,
    seed: int = 0,
    warn_above: float = WARN_ABOVE,
    progress: bool = True,
) -> dict[str, Any]:
    """Read the sampled files' headers and score each property per split; what audit.json holds.

    Files the index skipped (empty, not images) and files whose header cannot be read are listed under
    ``unreadable`` and left out; a split with no files is left out."""
    start = time.perf_counter()
    chosen = sample(index, splits, per_class, seed)
    unreadable = [
        {"split": split, "class": None, "path": path, "reason": reason}
        for split in splits
        for path, reason in index.skipped_by_split.get(split, [])
    ]
    facts: dict[str, dict[int, list[dict[str, Any]]]] = {}
    total = sum(len(paths) for by_label in chosen.values() for paths in by_label.values())
    with Progress(transient=True, disable=not progress or total < PROGRESS_FROM) as bar:
        task = bar.add_task("Reading file headers", total=total)
        for split, by_label in chosen.items():
            for label, paths in by_label.items():
                for path in paths:
                    try:
                        facts.setdefault(split, {}).setdefault(label, []).append(read_header(path))
                    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                        reason = f"header unreadable ({type(error).__name__}: {error})"
                        unreadable.append(
                            {"split": split, "class": LABELS[label], "path": path, "reason": reason}
                        )
                    bar.advance(task)
    result: dict[str, Any] = {
        "root": str(index.root),
        "source": index.source,
        "max_images_per_class": per_class,
        "seed": seed,
        "warn_above": warn_above,
        "splits": {},
    }
    for split, by_label in facts.items():
        rows = {label: by_label.get(label, []) for label in LABELS}
        properties = {}
        for name, (_, kind, _) in PROPERTIES.items():
            values = {label: [row[name] for row in rows[label]] for label in LABELS}
            auroc = separation(values[0], values[1], kind)
            described = {LABELS[label]: describe(name, values[label]) for label in LABELS}
            properties[name] = {
                **{f"{cls}_summary": text for cls, (text, _) in described.items()},
                **{cls: entry for cls, (_, entry) in described.items()},
                "auroc": auroc,
                "shortcut": auroc is not None and auroc > warn_above,
            }
        files = {LABELS[label]: len(rows[label]) for label in LABELS}
        result["splits"][split] = {"files": files, "properties": properties}
    result["unreadable"] = unreadable
    result["unreadable_count"] = len(unreadable)
    result["warnings"] = shortcut_warnings(result)
    result["seconds"] = time.perf_counter() - start
    return result


def shortcut_warnings(result: Mapping[str, Any]) -> list[str]:
    """One sentence per property above the threshold: the split, both classes' typical values, the fix."""
    lines = []
    for split, audited in result["splits"].items():
        properties = audited["properties"]
        for name, row in properties.items():
            if not row["shortcut"]:
                continue
            fix = PROPERTIES[name][2]
            if name == "bytes_per_pixel" and not any(properties[other]["shortcut"] for other in ENCODING):
                fix = f"{fix}; but {FINE_DETAIL}"
            lines.append(
                f"{split}: the {PROPERTIES[name][0]} alone tells real from fake (AUROC {row['auroc']:.2f}; "
                f"real {row['real_summary']}, fake {row['fake_summary']}): a detector can learn it instead "
                f"of the faces. Fix: {fix}."
            )
    return lines


def audit_table(result: Mapping[str, Any]) -> Table:
    """The console table: per split and property, both classes' values, the AUROC and the verdict; the
    caption counts and names the unreadable files."""
    table = Table(title=f"Shortcut audit: {result['root']}", title_justify="left", caption_justify="left")
    for column in ("split", "property", "real", "fake", "AUROC", "verdict"):
        table.add_column(column, justify="right" if column == "AUROC" else "left")
    for split, audited in result["splits"].items():
        files = audited["files"]
        for number, (name, row) in enumerate(audited["properties"].items()):
            auroc = row["auroc"]
            verdict = "n/a" if auroc is None else "[red]shortcut[/]" if row["shortcut"] else "[green]ok[/]"
            table.add_row(
                f"{split} ({files['real']} / {files['fake']})" if number == 0 else "",
                PROPERTIES[name][0],
                row["real_summary"],
                row["fake_summary"],
                "–" if auroc is None else f"{auroc:.2f}",
                verdict,
                end_section=number == len(PROPERTIES) - 1,
            )
    headers = sum(row["files"][c] for row in result["splits"].values() for c in ("real", "fake"))
    caption = [
        "Files read per split: real / fake. Numbers: median [5th–95th percentile]. AUROC: how well the "
        f"property alone separates the classes (0.5 not at all, 1 perfectly); above {result['warn_above']} "
        f"is a shortcut. {headers} headers in {result['seconds']:.1f} s."
    ]
    if bad := result["unreadable"]:
        listed = "; ".join(f"{row['path']} ({row['reason']})" for row in bad[:SHOWN_UNREADABLE])
        more = f"; and {len(bad) - SHOWN_UNREADABLE} more" if len(bad) > SHOWN_UNREADABLE else ""
        caption.append(f"{len(bad)} unreadable file(s) skipped (all in audit.json): {listed}{more}.")
    table.caption = "\n".join(caption)
    return table


def index_for_audit(datamodule: Any) -> DatasetIndex:
    """The data module's index, as its setup builds it (the synthetic set is generated first, once)."""
    datamodule.prepare_data()
    return index_dataset(datamodule.root, datamodule.split_dirs, datamodule.class_dirs, datamodule.use_csv)


@rank_zero_only
def warn_at_training_start(
    datamodule: Any, per_class: int = TRAINING_START_FILES, seed: int = 0
) -> list[str]:
    """ffd.train's check before fitting: the headers of ``per_class`` train files per class; each shortcut
    is logged as a warning and returned."""
    result = audit_index(index_for_audit(datamodule), ("train",), per_class, seed, progress=False)
    for line in result["warnings"]:
        log.warning("%s (Checked %d headers per class; audit_at_start=false skips this.)", line, per_class)
    return result["warnings"]
