"""Run one backend over an image, a folder or a glob: annotated PNG + JSON per image (+ the label map for
regions and parsing), a summary at the end.

Images larger than `max_side` are downscaled once for the models. Landmark coordinates in the JSON and the
label maps are always in the original image's pixels; the annotated PNG is at the working size, which the
JSON records as `working_size` (width, height).
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
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import track
from rich.table import Table
from rich.text import Text
from torchvision.io import write_png
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ffd import assets
from ffd import record as run_record
from ffd.images import UnreadableImageError, find_images, read_rgb
from ffd.runtime import (
    UserError,
    count_problem,
    device_problem,
    flag_problem,
    make_output_dir,
    output_folder,
    threshold_problem,
)
from ffd.segmentation import draw
from ffd.segmentation.landmarks import GROUPS, MESH, FaceLandmarker, face_record
from ffd.segmentation.parsing import PARSING_CLASSES, FaceParser
from ffd.segmentation.regions import REGION_CLASSES, label_map, region_masks

log = logging.getLogger(__name__)

BACKENDS = ("landmarks", "parsing", "regions")
GROUP_COLOURS = draw.palette(len(GROUPS))
MESH_COLOUR = (200, 200, 200)
PNG_COMPRESSION = 3  # zlib level: 2-3x faster than the default 6, files ~15% larger (4096 px: 3.4 s vs 9 s)

LABELS_SUFFIX = "_labels.png"  # the label map of regions and parsing
OUTPUT_SUFFIXES = (".png", ".json", LABELS_SUFFIX)  # appended to an output name (output_names)
FLAGS = ("overwrite", "landmarks.blendshapes", "landmarks.mesh", "parsing.half", "models.download")
NO_FACE = "no face found"
SMALL_FACES = (
    "MediaPipe's face detector misses faces smaller than about a tenth of the image side; crop such an "
    "image around the face"
)


class Annotation(NamedTuple):
    """A backend's work on one image: the annotated copy, the backend's part of the JSON record (always with
    "faces": a count, or None where the backend cannot tell) and, for regions and parsing, the label map
    (H, W) uint8 at the working size with the name of each index."""

    image: torch.Tensor
    record: dict[str, Any]
    labels: torch.Tensor | None = None
    classes: tuple[str, ...] = ()


# A backend takes the working image and the original (width, height).
Backend = Callable[[torch.Tensor, int, int], Annotation]


class SegmentError(UserError):
    """Bad input for a segmentation run (no images found, an option out of range, an output in the way)."""


SUMMARY_FILE = Path("summary.json")  # the run's, so an image named summary.* keeps its full name


def check_options(cfg: DictConfig) -> None:
    """Refuse an option of the wrong type or out of range before any model or file is touched, naming
    each: Hydra passes `overwrite=no` as the word "no", which Python takes as true, and `overlay_alpha=abc`
    would fail on the first image with a traceback."""
    size = cfg.parsing.size
    size_ok = count_problem(size, "parsing.size", minimum=32) is None and size % 32 == 0
    problems = [
        None if cfg.backend in BACKENDS else f"backend={cfg.backend} is not one of {', '.join(BACKENDS)}",
        count_problem(cfg.max_side, "max_side", minimum=32),
        threshold_problem(cfg.overlay_alpha, "overlay_alpha")
        and f"overlay_alpha={cfg.overlay_alpha} must be a number between 0 (no overlay) and 1 (opaque)",
        count_problem(cfg.landmarks.num_faces, "landmarks.num_faces"),
        threshold_problem(cfg.landmarks.min_confidence, "landmarks.min_confidence"),
        None if size_ok else f"parsing.size={size} must be a multiple of 32 (BiSeNet's stride), at least 32",
        *(flag_problem(OmegaConf.select(cfg, key), key) for key in FLAGS),
        device_problem(str(cfg.device)) if cfg.backend == "parsing" else None,
    ]
    if any(problems):
        raise SegmentError(
            "; ".join(filter(None, problems)) + ". Fix the option on the command line or in "
            "conf/segment.yaml."
        )


def _with_suffix(name: Path, suffix: str) -> Path:
    return name.with_name(name.name + suffix)  # not Path.with_suffix: shot.v1 must not become shot.png


def _outputs(name: Path) -> list[Path]:
    return [_with_suffix(name, suffix) for suffix in OUTPUT_SUFFIXES]


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
        taken = Counter(output for name in names.values() for output in _outputs(name))
        taken[SUMMARY_FILE] += 2
        clashes = [
            f for f, name in names.items() if name != full[f] and any(taken[o] > 1 for o in _outputs(name))
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


def find_inputs(spec: str) -> tuple[list[Path], int]:
    """The images of ``input=`` and how many earlier ffd.segment outputs were left out of a folder or glob
    (an image or a list named explicitly is taken whole)."""
    files = find_images(spec)
    if Path(spec).expanduser().is_file():
        return files, 0
    kept = [file for file in files if not earlier_output(file)]
    if not kept:
        raise SegmentError(
            f"input={spec}: its {len(files)} image(s) are all the outputs of an earlier ffd.segment run "
            "(a PNG beside the run's JSON record of the same name). Point input= at the original images, "
            "or name one output file to segment it."
        )
    return kept, len(files) - len(kept)


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
    def backend(image: torch.Tensor, width: int, height: int) -> Annotation:
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
        return Annotation(image, record)

    return backend


def regions_backend(landmarker: FaceLandmarker, alpha: float) -> Backend:
    colours = draw.palette(len(REGION_CLASSES))

    def backend(image: torch.Tensor, width: int, height: int) -> Annotation:
        faces = landmarker.detect(image)
        h, w = image.shape[-2:]
        masks = [region_masks(face.pixels(w, h), h, w) for face in faces]
        labels = label_map(masks, h, w)
        annotated = draw.overlay_labels(image, torch.from_numpy(labels), colours, alpha)
        record = {
            "faces": len(faces),
            "class_share": _shares(labels, REGION_CLASSES),
            "detections": [
                {
                    "bbox_px": np.round(face.bbox(width, height), 2).tolist(),
                    "region_share": {name: round(float(m.mean()), 6) for name, m in face_masks.items()},
                }
                for face, face_masks in zip(faces, masks, strict=True)
            ],
        }
        legend = _legend(labels, REGION_CLASSES, colours)
        return Annotation(
            draw.add_legend(annotated, legend), record, torch.from_numpy(labels), REGION_CLASSES
        )

    return backend


def parsing_backend(parser: FaceParser, alpha: float) -> Backend:
    colours = draw.palette(len(PARSING_CLASSES))

    def backend(image: torch.Tensor, width: int, height: int) -> Annotation:
        labels = parser(image)
        annotated = draw.overlay_labels(image, labels, colours, alpha)
        record = {
            "faces": None,  # BiSeNet labels every pixel; it does not detect or count faces
            "class_share": _shares(labels.numpy(), PARSING_CLASSES),
        }
        legend = _legend(labels.numpy(), PARSING_CLASSES, colours)
        return Annotation(draw.add_legend(annotated, legend), record, labels, PARSING_CLASSES)

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


def _parser_weights(cfg: Any) -> Path:
    try:
        return _model_file(cfg, "parsing_bisenet.pth")
    except assets.AssetError as error:
        raise assets.AssetError(
            f"{error} Without these weights, backend=regions draws face-part masks from the MediaPipe "
            "landmarks and needs no download."
        ) from None


@contextmanager
def open_backend(cfg: Any) -> Iterator[tuple[Backend, Path]]:
    """Build the configured backend (model files checked first; options by run's check_options) and name
    its model file; closes MediaPipe's graph afterwards."""
    if cfg.backend == "parsing":
        weights = _parser_weights(cfg)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        parser = FaceParser(weights, device, cfg.parsing.half, cfg.parsing.size)
        yield parsing_backend(parser, cfg.overlay_alpha), weights
        return
    options = cfg.landmarks
    model = _model_file(cfg, "face_landmarker.task")
    with FaceLandmarker(model, options.num_faces, options.blendshapes, options.min_confidence) as landmarker:
        if cfg.backend == "landmarks":
            yield landmarks_backend(landmarker, options.mesh), model
        else:
            yield regions_backend(landmarker, cfg.overlay_alpha), model


SKIPPED = ("unreadable", "failed")  # statuses of files with no output
AT_LIMIT = "images at landmarks.num_faces"  # a total: images that gave as many faces as were looked for


@dataclass
class Summary:
    """What a run did, for summary.json, the console and the run's log. ``face_limit`` is
    landmarks.num_faces, the most faces looked for per image, or None for a backend that finds no faces
    (parsing labels pixels)."""

    backend: str
    input: str
    model: str
    output: str
    face_limit: int | None
    earlier_outputs_skipped: int = 0
    complete: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.records)

    @property
    def processed(self) -> int:
        return len(self.records) - sum(self.count(status) for status in SKIPPED)

    def totals(self) -> dict[str, Any]:
        done = [r for r in self.records if r["status"] not in SKIPPED]
        times = [r["ms"] for r in done]
        finds_faces = self.face_limit is not None
        return {
            "images": len(done),
            "faces found": sum(r["faces"] for r in done) if finds_faces else None,
            "no-face images": self.count("no_face") if finds_faces else None,
            AT_LIMIT: sum(r["faces"] == self.face_limit for r in done) if finds_faces else None,
            "unreadable files": self.count("unreadable"),
            "failed files": self.count("failed"),
            "earlier outputs skipped": self.earlier_outputs_skipped,
            "ms per image (median)": round(statistics.median(times), 1) if times else None,
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "totals": self.totals()}, indent=2))

    def notes(self) -> list[str]:
        """What the counts mean for the user: faces that may have been missed."""
        totals, notes = self.totals(), []
        if totals[AT_LIMIT]:
            notes.append(
                f"{totals[AT_LIMIT]} image(s) gave {self.face_limit} face(s), as many "
                f"as landmarks.num_faces={self.face_limit} looks for: there may be more. Pass a larger "
                f"landmarks.num_faces (e.g. landmarks.num_faces={self.face_limit * 4}) to look for them."
            )
        if totals["no-face images"]:
            notes.append(f"{totals['no-face images']} image(s) with {NO_FACE}: {SMALL_FACES}.")
        return notes

    def print(self, console: Console) -> None:
        """The totals, the notes, the files skipped, and last the output folder on a line of its own: never
        wrapped, so that it can be copied whole."""
        table = Table(title=f"ffd.segment: backend={self.backend}", show_header=False)
        table.add_column("total")
        table.add_column("value", justify="right")
        for name, value in self.totals().items():
            table.add_row(name, "n/a" if value is None else str(value))
        console.print(table)
        for note in self.notes():
            console.print(Text(note))
        skipped = [r for r in self.records if r["status"] in SKIPPED]
        if skipped:
            listing = Table(title="Files skipped (no output)")
            listing.add_column("file", overflow="fold")
            listing.add_column("reason", overflow="fold")
            for row in skipped:
                listing.add_row(Text(row["file"]), Text(row["reason"]))  # [x] in a name is no markup
            console.print(listing)
        console.print(Text(f"Annotated images, their JSON and summary.json in {self.output}"), soft_wrap=True)

    def log(self) -> None:
        """One line for the run's log file (segment.log), which the console's table does not reach."""
        totals = ", ".join(
            f"{name} {'n/a' if value is None else value}" for name, value in self.totals().items()
        )
        run_record.info(
            "ffd.segment%s: input %s; backend %s; model %s; %s; written to %s",
            "" if self.complete else " (stopped early)",
            self.input,
            self.backend,
            self.model,
            totals,
            self.output,
        )


def _note(faces: int | None, face_limit: int | None) -> str | None:
    """The per-image JSON's note on faces that may have been missed."""
    if faces == 0:
        return f"{NO_FACE}; {SMALL_FACES}"
    if faces is not None and faces == face_limit:
        return (
            f"faces found reached landmarks.num_faces={face_limit}, the most looked for; pass a larger "
            "landmarks.num_faces to look for more"
        )
    return None


def _at_size(labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The label map (H, W) at the original image's size: indices are never blended (nearest)."""
    if labels.shape == (height, width):
        return labels
    return TF.resize(labels[None], [height, width], InterpolationMode.NEAREST_EXACT)[0]


def segment_one(
    backend: Backend, file: Path, out: Path, max_side: int, face_limit: int | None = None
) -> dict[str, Any]:
    """Read, annotate, write <out>.png, <out>.json and the label map <out>_labels.png if the backend makes
    one; returns the summary row for this file. Paths are absolute (links kept): the JSON is read from the
    output folder, not from the shell's."""
    start = time.perf_counter()
    path = os.path.abspath(file)
    try:
        image = read_rgb(file)
    except UnreadableImageError as error:
        return {"file": path, "status": "unreadable", "reason": error.reason, "faces": None, "ms": None}
    height, width = image.shape[-2:]
    working = fit(image, max_side)
    try:
        result = backend(working, width, height)
    except Exception as error:  # one image the model cannot take must not stop a folder of thousands
        log.warning("%s: %s: %s", file, type(error).__name__, error)
        reason = f"the {type(error).__name__} of the model: {error}"
        return {"file": path, "status": "failed", "reason": reason, "faces": None, "ms": None}
    faces = result.record["faces"]
    out.parent.mkdir(parents=True, exist_ok=True)
    annotated = draw.add_note(working, NO_FACE) if faces == 0 else result.image
    write_png(annotated, str(_with_suffix(out, ".png")), compression_level=PNG_COMPRESSION)
    content = {"file": path, "width": width, "height": height, "working_size": list(working.shape[:0:-1])}
    content.update(result.record)
    if result.labels is not None:
        labels_file = _with_suffix(out, LABELS_SUFFIX)
        labels = _at_size(result.labels, height, width)[None]
        write_png(labels, str(labels_file), compression_level=PNG_COMPRESSION)
        content["labels"] = {"file": labels_file.name, "classes": dict(enumerate(result.classes))}
    else:  # an earlier regions or parsing run's map (overwrite=true) would outlive the JSON that named it
        _with_suffix(out, LABELS_SUFFIX).unlink(missing_ok=True)
    if note := _note(faces, face_limit):
        content["note"] = note
    _with_suffix(out, ".json").write_text(json.dumps(content))
    return {
        "file": path,
        "status": "no_face" if faces == 0 else "ok",
        "faces": faces,
        "ms": round((time.perf_counter() - start) * 1e3, 1),
    }


def _check_targets(output: Path, names: dict[Path, Path], overwrite: bool) -> None:
    """Never write over an input image; write over other existing files only when asked to. The label map
    counts for every backend: one that makes none removes an earlier run's (segment_one)."""
    inputs = {file.resolve() for file in names}
    targets = [path for name in names.values() for path in _outputs(output / name)]
    existing = []
    for target in [*targets, output / SUMMARY_FILE]:
        if target.resolve() in inputs:
            raise SegmentError(
                f"output={output} would overwrite the input image {target} with an output of this run. "
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


def run(cfg: DictConfig, console: Console | None = None) -> Summary:
    """The whole command: find the images, run the backend on each, write the outputs and summary.json.

    summary.json and the log line are written also when the run stops early (an interrupt, a full disk):
    they say what was done."""
    console = console or Console()
    check_options(cfg)
    files, earlier = find_inputs(str(cfg.input))
    output = output_folder(cfg.output)
    names = output_names(files)
    _check_targets(output, names, cfg.overwrite)
    face_limit = None if cfg.backend == "parsing" else cfg.landmarks.num_faces
    with open_backend(cfg) as (backend, model):
        make_output_dir(output)  # after the model loads: a model that cannot be had leaves no empty folder
        summary = Summary(
            backend=cfg.backend,
            input=os.path.abspath(os.path.expanduser(str(cfg.input))),
            model=os.path.abspath(model),
            output=os.path.abspath(output),
            face_limit=face_limit,
            earlier_outputs_skipped=earlier,
        )
        try:
            for file in track(files, description=f"segment ({cfg.backend})", console=console, transient=True):
                summary.records.append(
                    segment_one(backend, file, output / names[file], cfg.max_side, face_limit)
                )
            summary.complete = True
        finally:
            summary.write(output / SUMMARY_FILE)
            summary.log()
    summary.print(console)
    return summary
