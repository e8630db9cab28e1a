"""Run one backend over an image, a folder or a glob: annotated PNG + JSON per image, a summary at the end.

Images larger than `max_side` are downscaled once for the models. Landmark coordinates in the JSON are
always in the original image's pixels; the annotated PNG (and the label maps behind it) are at the
working size, which the JSON records as `working_size` (width, height).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from rich.text import Text
from torchvision.io import write_png
from torchvision.transforms.v2 import functional as TF

from ffd import assets
from ffd.images import UnreadableImageError, find_images, read_rgb
from ffd.runtime import UserError, device_problem, make_output_dir
from ffd.segmentation import draw
from ffd.segmentation.landmarks import GROUPS, MESH, FaceLandmarker, face_record
from ffd.segmentation.parsing import PARSING_CLASSES, FaceParser
from ffd.segmentation.regions import REGION_CLASSES, label_map, region_masks

log = logging.getLogger(__name__)

BACKENDS = ("landmarks", "parsing", "regions")
GROUP_COLOURS = draw.palette(len(GROUPS))
MESH_COLOUR = (200, 200, 200)
PNG_COMPRESSION = 3  # zlib level: 2-3x faster than the default 6, files ~15% larger (4096 px: 3.4 s vs 9 s)

# A backend takes the working image and the original (width, height) and returns the annotated image
# and the backend's part of the JSON record (always with "faces": a count, or None if it cannot tell).
Backend = Callable[[torch.Tensor, int, int], tuple[torch.Tensor, dict[str, Any]]]


class SegmentError(UserError):
    """Bad input for a segmentation run (no images found, an option out of range, an output in the way)."""


SUMMARY = Path("summary")  # summary.json: the run's, so an image named summary.* keeps its full name


def check_options(cfg: Any) -> None:
    """Refuse an option out of range before any model or file is touched, naming the option."""
    problems = []
    if cfg.backend not in BACKENDS:
        problems.append(f"backend={cfg.backend} is not one of {', '.join(BACKENDS)}")
    if not (isinstance(cfg.max_side, int) and cfg.max_side >= 32):
        problems.append(f"max_side={cfg.max_side} must be a whole number of pixels, at least 32")
    if not 0.0 <= cfg.overlay_alpha <= 1.0:
        problems.append(f"overlay_alpha={cfg.overlay_alpha} must lie between 0 and 1")
    if not (isinstance(cfg.landmarks.num_faces, int) and cfg.landmarks.num_faces >= 1):
        problems.append(f"landmarks.num_faces={cfg.landmarks.num_faces} must be at least 1")
    if not 0.0 <= cfg.landmarks.min_confidence <= 1.0:
        problems.append(f"landmarks.min_confidence={cfg.landmarks.min_confidence} must lie between 0 and 1")
    if cfg.backend == "parsing":
        if not (isinstance(cfg.parsing.size, int) and cfg.parsing.size >= 32 and cfg.parsing.size % 32 == 0):
            problems.append(f"parsing.size={cfg.parsing.size} must be a multiple of 32 (BiSeNet's stride)")
        problems += [problem] if (problem := device_problem(str(cfg.device))) else []
    if problems:
        raise SegmentError(
            "; ".join(problems) + ". Fix the option on the command line or in conf/segment.yaml."
        )


def output_names(files: list[Path]) -> dict[Path, Path]:
    """Output name (to which .png and .json are appended) per input, mirroring sub-folders: x.jpg gives
    x, or x.jpg where x.png is there too (x.jpg.png, x.png.png), or summary.jpg (summary.json is the run's).

    Paths are taken as given (absolute, not resolved): a symlinked image keeps the name of its link."""
    if not files:
        return {}
    absolute = {f: Path(os.path.abspath(f)) for f in files}
    root = Path(os.path.commonpath([path.parent for path in absolute.values()]))
    full = {f: path.relative_to(root) for f, path in absolute.items()}
    names = {f: name.with_suffix("") for f, name in full.items()}
    while True:  # a full name can meet another file's short name (x.jpg, and x.jpg.png's x.jpg)
        taken = Counter(names.values())  # counted once per pass: a folder may hold tens of thousands
        taken[SUMMARY] += 2
        clashes = [f for f, name in names.items() if taken[name] > 1 and name != full[f]]
        if not clashes:
            return names
        names.update((f, full[f]) for f in clashes)


def _with_suffix(name: Path, suffix: str) -> Path:
    return name.with_name(name.name + suffix)  # not Path.with_suffix: shot.v1 must not become shot.png


def fit(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """Downscale (antialiased) so the longer side is at most max_side; smaller images are untouched."""
    height, width = image.shape[-2:]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)  # a 9000 x 1 strip keeps a row: never a side of 0
    return TF.resize(image, [max(1, round(height * scale)), max(1, round(width * scale))], antialias=True)


def _shares(labels: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    return {name: round(float(count) / labels.size, 6) for name, count in zip(classes, counts, strict=True)}


def _legend(
    labels: np.ndarray, classes: tuple[str, ...], colours: list[draw.Colour]
) -> list[tuple[str, draw.Colour]]:
    return [(classes[c], colours[c]) for c in np.unique(labels) if c != 0]


def landmarks_backend(landmarker: FaceLandmarker, mesh: bool) -> Backend:
    def backend(image: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, dict[str, Any]]:
        faces = landmarker.detect(image)
        points = [face.pixels(image.shape[2], image.shape[1]) for face in faces]
        if mesh:
            image = draw.draw_connections(image, points, MESH, MESH_COLOUR)
        image = draw.add_legend(
            draw.draw_groups(image, points, GROUPS, GROUP_COLOURS),
            list(zip(GROUPS, GROUP_COLOURS, strict=True)),
        )
        record = {
            "faces": len(faces),
            "landmark_groups": {name: list(indices) for name, indices in GROUPS.items()},
            "detections": [face_record(face, width, height) for face in faces],
        }
        return image, record

    return backend


def regions_backend(landmarker: FaceLandmarker, alpha: float) -> Backend:
    colours = draw.palette(len(REGION_CLASSES))

    def backend(image: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, dict[str, Any]]:
        faces = landmarker.detect(image)
        h, w = image.shape[-2:]
        masks = [region_masks(face.pixels(w, h), h, w) for face in faces]
        labels = label_map(masks, h, w)
        annotated = draw.overlay_labels(image, torch.from_numpy(labels), colours, alpha)
        record = {
            "faces": len(faces),
            "classes": list(REGION_CLASSES),
            "class_share": _shares(labels, REGION_CLASSES),
            "detections": [
                {
                    "bbox_px": np.round(face.bbox(width, height), 2).tolist(),
                    "region_share": {name: round(float(m.mean()), 6) for name, m in face_masks.items()},
                }
                for face, face_masks in zip(faces, masks, strict=True)
            ],
        }
        return draw.add_legend(annotated, _legend(labels, REGION_CLASSES, colours)), record

    return backend


def parsing_backend(parser: FaceParser, alpha: float) -> Backend:
    colours = draw.palette(len(PARSING_CLASSES))

    def backend(image: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, dict[str, Any]]:
        labels = parser(image)
        annotated = draw.overlay_labels(image, labels, colours, alpha)
        record = {
            "faces": None,  # BiSeNet labels every pixel; it does not detect or count faces
            "classes": list(PARSING_CLASSES),
            "class_share": _shares(labels.numpy(), PARSING_CLASSES),
        }
        return draw.add_legend(annotated, _legend(labels.numpy(), PARSING_CLASSES, colours)), record

    return backend


def _model_file(cfg: Any, name: str) -> Path:
    entry = cfg.models[Path(name).stem]
    return assets.ensure(
        name,
        path=entry.path,
        sha256=entry.sha256,
        cache_dir=cfg.models.cache_dir,
        allow_download=cfg.models.download,
        wheelhouse=list(cfg.models.wheelhouse or []),
    )


def _parser(cfg: Any) -> FaceParser:
    try:
        weights = _model_file(cfg, "parsing_bisenet.pth")
    except assets.AssetError as error:
        raise assets.AssetError(
            f"{error} Without these weights, backend=regions draws face-part masks from the MediaPipe "
            "landmarks and needs no download."
        ) from None
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return FaceParser(weights, device, cfg.parsing.half, cfg.parsing.size)


@contextmanager
def open_backend(cfg: Any) -> Iterator[Backend]:
    """Build the configured backend (model files checked first; options by run's check_options); closes
    MediaPipe's graph afterwards."""
    if cfg.backend == "parsing":
        yield parsing_backend(_parser(cfg), cfg.overlay_alpha)
        return
    options = cfg.landmarks
    model = _model_file(cfg, "face_landmarker.task")
    with FaceLandmarker(model, options.num_faces, options.blendshapes, options.min_confidence) as landmarker:
        if cfg.backend == "landmarks":
            yield landmarks_backend(landmarker, options.mesh)
        else:
            yield regions_backend(landmarker, cfg.overlay_alpha)


SKIPPED = ("unreadable", "failed")  # statuses of files with no output


@dataclass
class Summary:
    backend: str
    output: str
    records: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.records)

    @property
    def processed(self) -> int:
        return len(self.records) - sum(self.count(status) for status in SKIPPED)

    def totals(self) -> dict[str, Any]:
        faces = [r["faces"] for r in self.records if r["status"] not in SKIPPED]
        times = [r["ms"] for r in self.records if r["status"] not in SKIPPED]
        counted = [f for f in faces if f is not None]
        return {
            "images": self.processed,
            "faces found": sum(counted) if counted or not faces else None,
            "no-face images": self.count("no_face"),
            "unreadable files": self.count("unreadable"),
            "failed files": self.count("failed"),
            "ms per image (median)": round(statistics.median(times), 1) if times else None,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "totals": self.totals()}, indent=2))

    def print(self, console: Console) -> None:
        """The totals, the files skipped, and last the output folder on a line of its own: never wrapped,
        so that it can be copied whole."""
        table = Table(title=f"ffd.segment: backend={self.backend}", show_header=False)
        table.add_column("total")
        table.add_column("value", justify="right")
        for name, value in self.totals().items():
            table.add_row(name, "n/a" if value is None else str(value))
        console.print(table)
        skipped = [r for r in self.records if r["status"] in SKIPPED]
        if skipped:
            listing = Table(title="Files skipped (no output)")
            listing.add_column("file", overflow="fold")
            listing.add_column("reason", overflow="fold")
            for record in skipped:
                listing.add_row(Text(record["file"]), Text(record["reason"]))  # [x] in a name is no markup
            console.print(listing)
        console.print(Text(f"Annotated images, their JSON and summary.json in {self.output}"), soft_wrap=True)


def segment_one(backend: Backend, file: Path, out: Path, max_side: int) -> dict[str, Any]:
    """Read, annotate, write <out>.png and <out>.json; returns the summary row for this file."""
    start = time.perf_counter()
    try:
        image = read_rgb(file)
    except UnreadableImageError as error:
        return {"file": str(file), "status": "unreadable", "reason": error.reason, "faces": None, "ms": None}
    height, width = image.shape[-2:]
    working = fit(image, max_side)
    try:
        annotated, record = backend(working, width, height)
    except Exception as error:  # one image the model cannot take must not stop a folder of thousands
        log.warning("%s: %s: %s", file, type(error).__name__, error)
        reason = f"the {type(error).__name__} of the model: {error}"
        return {"file": str(file), "status": "failed", "reason": reason, "faces": None, "ms": None}
    if record["faces"] == 0:
        annotated = draw.add_note(working, "no face found")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(annotated, str(_with_suffix(out, ".png")), compression_level=PNG_COMPRESSION)
    header = {"file": str(file), "width": width, "height": height, "working_size": list(working.shape[:0:-1])}
    _with_suffix(out, ".json").write_text(json.dumps({**header, **record}))
    return {
        "file": str(file),
        "status": "no_face" if record["faces"] == 0 else "ok",
        "faces": record["faces"],
        "ms": round((time.perf_counter() - start) * 1e3, 1),
    }


def _check_targets(output: Path, names: dict[Path, Path], overwrite: bool) -> None:
    """Never write over an input image; write over other existing files only when asked to."""
    inputs = {file.resolve() for file in names}
    existing = []
    for name in [*names.values(), SUMMARY]:
        for suffix in (".png", ".json"):
            target = _with_suffix(output / name, suffix)
            if target.resolve() in inputs:
                raise SegmentError(
                    f"output={output} would overwrite the input image {target} with its annotated copy. "
                    "Choose an output folder apart from the images (the default is the run's folder)."
                )
            if target.exists():
                existing.append(target)
    if existing and not overwrite:
        shown = ", ".join(str(path) for path in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise SegmentError(
            f"output={output} already holds {len(existing)} of this run's output files ({shown}). Pass "
            "overwrite=true to replace them, or choose another output folder (the default is a new "
            "folder per run)."
        )


def run(cfg: Any, console: Console | None = None) -> Summary:
    """The whole command: find the images, run the backend on each, write the outputs and summary.json.

    summary.json is written also when the run stops early (an interrupt, a full disk): it lists what was
    done."""
    console = console or Console()
    check_options(cfg)
    files = find_images(cfg.input)
    output = Path(cfg.output)
    names = output_names(files)
    _check_targets(output, names, cfg.overwrite)
    summary = Summary(backend=cfg.backend, output=str(output))
    with open_backend(cfg) as backend:
        make_output_dir(output)  # after the model loads: a model that cannot be had leaves no empty folder
        try:
            for file in track(files, description=f"segment ({cfg.backend})", console=console, transient=True):
                summary.records.append(segment_one(backend, file, output / names[file], cfg.max_side))
        finally:
            summary.write(output / "summary.json")
    summary.print(console)
    return summary
