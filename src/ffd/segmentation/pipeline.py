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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import track
from torchvision.io import write_png
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ffd import (
    assets,
    resolvers,  # noqa: F401  (run(cfg) resolves ${ffd.model_cache:})
)
from ffd.errors import UnreadableImageError, UserError
from ffd.images import find_images, read_rgb
from ffd.options import count_problem, device_problem, flag_problem, threshold_problem
from ffd.outputs import make_output_dir, output_folder
from ffd.segmentation import draw
from ffd.segmentation.landmarks import GROUPS, MESH, FaceLandmarker, face_record
from ffd.segmentation.outputs import (
    LABELS_SUFFIX,
    SUMMARY_FILE,
    add_suffix,
    earlier_output,
    output_files,
    output_names,
)
from ffd.segmentation.parsing import PARSING_CLASSES, FaceParser
from ffd.segmentation.regions import REGION_CLASSES, label_map, region_masks
from ffd.segmentation.summary import NO_FACE, Summary, face_note

log = logging.getLogger(__name__)

BACKENDS = ("landmarks", "parsing", "regions")
GROUP_COLOURS = draw.palette(len(GROUPS))
MESH_COLOUR = (200, 200, 200)
PNG_COMPRESSION = 3  # zlib level: 2-3x faster than the default 6, files ~15% larger (4096 px: 3.4 s vs 9 s)

FLAGS = ("overwrite", "landmarks.blendshapes", "landmarks.mesh", "parsing.half", "models.download")


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


def model_file(cfg: Any, name: str) -> Path:
    """The checked model file ``name`` (e.g. face_landmarker.task) as ``cfg.models`` says to find it."""
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
        return model_file(cfg, "parsing_bisenet.pth")
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
    model = model_file(cfg, "face_landmarker.task")
    with FaceLandmarker(model, options.num_faces, options.blendshapes, options.min_confidence) as landmarker:
        if cfg.backend == "landmarks":
            yield landmarks_backend(landmarker, options.mesh), model
        else:
            yield regions_backend(landmarker, cfg.overlay_alpha), model


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
    write_png(annotated, str(add_suffix(out, ".png")), compression_level=PNG_COMPRESSION)
    content = {"file": path, "width": width, "height": height, "working_size": list(working.shape[:0:-1])}
    content.update(result.record)
    if result.labels is not None:
        labels_file = add_suffix(out, LABELS_SUFFIX)
        labels = _at_size(result.labels, height, width)[None]
        write_png(labels, str(labels_file), compression_level=PNG_COMPRESSION)
        content["labels"] = {"file": labels_file.name, "classes": dict(enumerate(result.classes))}
    else:  # an earlier regions or parsing run's map (overwrite=true) would outlive the JSON that named it
        add_suffix(out, LABELS_SUFFIX).unlink(missing_ok=True)
    if note := face_note(faces, face_limit):
        content["note"] = note
    add_suffix(out, ".json").write_text(json.dumps(content))
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
    targets = [path for name in names.values() for path in output_files(output / name)]
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
