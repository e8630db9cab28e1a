"""ffd.eval ... explain=true: where the tested model looks, face part by face part.

After the test, up to ``explain_images`` of its images (spread over predictions.csv) get a Grad-CAM
heatmap of the verdict's class and MediaPipe landmarks; the heatmap's mass is split over the face regions
of ffd.faces.attribution. Written beside the test report:

    region_shares.csv    one row per explained image: path, label, p_fake, group, a share per region
    region_shares.json   mean shares per group (fakes caught, reals passed, mistakes), the area each region
                         covers (a heatmap that looked nowhere in particular), the images with no face
    region_shares.png    the group means as bars
    explained_fakes.png  the most confident fakes with their heatmaps
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from rich.progress import track

from ffd import resolvers  # noqa: F401  (run(cfg) resolves ${ffd.model_cache:})
from ffd.data.transforms import eval_transform
from ffd.errors import UnreadableImageError
from ffd.faces.attribution import ATTRIBUTION_REGIONS, region_shares
from ffd.faces.explain import ExplainError, GradCam, refuse_onnx_explain
from ffd.faces.overlay import overlay
from ffd.images import read_rgb
from ffd.models.classifier import DeepfakeClassifier
from ffd.options import count_problem, flag_problem
from ffd.report import FILE_NAMES
from ffd.segmentation.landmarks import Face, FaceLandmarker
from ffd.segmentation.pipeline import model_file

GROUPS = ("fakes caught", "reals passed", "mistakes")
AREA = "area"  # the regions' mean area shares: what a heatmap spread evenly over the image would give
EXPLAIN_FILES = ("region_shares.csv", "region_shares.json", "region_shares.png", "explained_fakes.png")
GRID_IMAGES = 16
BATCH_SIZE = 16


def group_of(label: int, p_fake: float, threshold: float) -> str:
    """The verdict's group; fake above the threshold, strictly, as the report counts it."""
    said_fake = p_fake > threshold
    if said_fake == bool(label):
        return GROUPS[0] if said_fake else GROUPS[1]
    return GROUPS[2]


@dataclass
class Row:
    path: str
    label: int
    p_fake: float


@dataclass
class Explained:
    """One explained image: the model's input (3, S, S), its heatmap (S, S) and the heatmap's shares."""

    row: Row
    group: str
    image: torch.Tensor
    heatmap: np.ndarray
    shares: dict[str, float]
    area: dict[str, float]


@dataclass
class Explanations:
    explained: list[Explained] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def read_predictions(path: Path) -> list[Row]:
    """The rows of the report's predictions.csv."""
    with path.open(newline="", errors=FILE_NAMES) as handle:
        return [Row(r["path"], int(r["label"]), float(r["p_fake"])) for r in csv.DictReader(handle)]


def spread(rows: Sequence[Row], limit: int) -> list[Row]:
    """At most ``limit`` rows, evenly spaced over the table (its classes in their proportions); all of a
    table no longer than that."""
    if len(rows) <= limit:
        return list(rows)
    return [rows[i] for i in np.linspace(0, len(rows) - 1, limit).round().astype(int)]


def model_pixels(face: Face, width: int, height: int, size: int) -> np.ndarray:
    """(478, 2) landmark pixels of a face found in a width x height image, in the (size, size) model input
    that eval_transform makes of it: resized on the short side, centre-cropped."""
    if (width, height) == (size, size):
        return face.pixels(size, size)
    short, long = min(width, height), max(width, height)
    resized = (size, int(size * long / short))  # torchvision's resize of the short side
    resized_width, resized_height = resized if width <= height else resized[::-1]
    offset = np.array([round((resized_width - size) / 2.0), round((resized_height - size) / 2.0)])
    return face.pixels(resized_width, resized_height) - offset


Found = tuple[Row, torch.Tensor, np.ndarray]  # the row, its model input (3, S, S), its landmark pixels there


def find_faces(rows: Sequence[Row], landmarker_file: Path, size: int, result: Explanations) -> list[Found]:
    """Each row's image at the model's input size and its face's landmarks, found on the file as read
    (the detector's best view) and mapped to that input; the others go to ``result``'s lists. MediaPipe's
    graph is closed before Grad-CAM starts."""
    transform = eval_transform(size)
    found = []
    with FaceLandmarker(landmarker_file) as landmarker:
        for row in track(rows, description="explain (landmarks)", transient=True):
            try:
                image = read_rgb(row.path)
            except UnreadableImageError as error:
                result.unreadable.append((row.path, error.reason))
                continue
            faces = landmarker.detect(image)
            if not faces:
                result.no_face.append(row.path)
                continue
            height, width = image.shape[-2:]
            found.append((row, transform(image), model_pixels(faces[0], width, height, size)))
    return found


def explain_rows(
    classifier: DeepfakeClassifier,
    rows: Sequence[Row],
    landmarker_file: Path,
    threshold: float = 0.5,
    batch_size: int = BATCH_SIZE,
) -> Explanations:
    """Landmarks and a Grad-CAM heatmap of the verdict's class for each row's image, and its shares."""
    size = classifier.image_size or 256
    result = Explanations()
    found = find_faces(rows, landmarker_file, size, result)
    uniform = np.ones((size, size), np.float32)
    batches = [found[start : start + batch_size] for start in range(0, len(found), batch_size)]
    with GradCam(classifier) as cam:
        for batch in track(batches, description="explain (Grad-CAM)", transient=True):
            images = torch.stack([image for _, image, _ in batch])
            heatmaps = cam.heatmaps(images, [row.p_fake > threshold for row, _, _ in batch])
            for (row, image, points), heatmap in zip(batch, heatmaps, strict=True):
                result.explained.append(
                    Explained(
                        row,
                        group_of(row.label, row.p_fake, threshold),
                        image,
                        heatmap,
                        region_shares(heatmap, points),
                        region_shares(uniform, points),
                    )
                )
    return result


def mean_shares(explanations: Explanations) -> dict[str, dict[str, Any]]:
    """Per group (and for the regions' areas): how many images, and each region's mean share (null with no
    image in the group)."""
    every = explanations.explained
    groups = {name: [e.shares for e in every if e.group == name] for name in GROUPS}
    groups[AREA] = [e.area for e in every]
    return {
        name: {
            "images": len(members),
            "shares": {
                region: (float(np.mean([m[region] for m in members])) if members else None)
                for region in ATTRIBUTION_REGIONS
            },
        }
        for name, members in groups.items()
    }


def shares_figure(means: dict[str, dict[str, Any]]) -> Figure:
    """Bars of the mean share per region, one per group, the regions' area as the grey baseline."""
    names = [*GROUPS, AREA]
    colours = {"fakes caught": "#e34a33", "reals passed": "#2b8cbe", "mistakes": "#fdae61", AREA: "#bdbdbd"}
    fig, ax = plt.subplots(figsize=(8.5, 4.2), dpi=110)
    x = np.arange(len(ATTRIBUTION_REGIONS))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        shares = means[name]["shares"]
        values = [math.nan if shares[r] is None else shares[r] for r in ATTRIBUTION_REGIONS]
        label = f"{name} ({means[name]['images']})" if name != AREA else "area of the region"
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=label, color=colours[name])
    ax.set_xticks(x, [r.replace("_", " / ") for r in ATTRIBUTION_REGIONS])
    ax.set_ylabel("mean share of the Grad-CAM heatmap")
    ax.set_title("Where the evidence for the verdict lies, per face region")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fakes_figure(explained: Sequence[Explained], count: int = GRID_IMAGES) -> Figure:
    """The fakes with the highest P(fake), each with its heatmap over it and its leading region."""
    fakes = sorted((e for e in explained if e.row.label == 1), key=lambda e: -e.row.p_fake)[:count]
    columns = min(4, max(len(fakes), 1))
    rows = max(math.ceil(len(fakes) / columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * max(columns, 3), 2.8 * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not fakes:
        axes.flat[0].text(0.5, 0.5, "no fake image was explained", ha="center", va="center")
    for ax, item in zip(axes.flat, fakes, strict=False):
        ax.imshow(overlay(item.image, item.heatmap).permute(1, 2, 0).numpy(), interpolation="nearest")
        top = max(item.shares, key=item.shares.__getitem__)
        ax.set_title(
            f"P(fake) {item.row.p_fake:.1%} · {item.group}\n{top} {item.shares[top]:.0%} · "
            f"{Path(item.row.path).name[:28]}",
            fontsize=8,
        )
    fig.suptitle("Most confident fakes: Grad-CAM evidence of the verdict (red: most)", fontsize=10)
    fig.tight_layout()
    return fig


def write_explanations(output_dir: Path, explanations: Explanations, threshold: float) -> dict[str, Any]:
    """Write the four files into ``output_dir``; return what region_shares.json holds."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / EXPLAIN_FILES[0]).open("w", newline="", errors=FILE_NAMES) as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "p_fake", "group", *ATTRIBUTION_REGIONS])
        for e in explanations.explained:
            shares = [repr(round(e.shares[r], 6)) for r in ATTRIBUTION_REGIONS]
            writer.writerow([e.row.path, e.row.label, repr(e.row.p_fake), e.group, *shares])
    summary = {
        "threshold": threshold,
        "regions": list(ATTRIBUTION_REGIONS),
        "explained": len(explanations.explained),
        "groups": mean_shares(explanations),
        "no_face": {"count": len(explanations.no_face), "files": explanations.no_face},
        "unreadable": {
            "count": len(explanations.unreadable),
            "files": [path for path, _ in explanations.unreadable],
        },
        "method": "Grad-CAM of the verdict's class; share = the heatmap's mass in the region over its total",
    }
    (output_dir / EXPLAIN_FILES[1]).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    for name, fig in (
        (EXPLAIN_FILES[2], shares_figure(summary["groups"])),
        (EXPLAIN_FILES[3], fakes_figure(explanations.explained)),
    ):
        fig.savefig(output_dir / name)
        plt.close(fig)
    return summary


@dataclass
class Explainer:
    """explain=true of an eval run, set up before the test (options checked, the landmarker model had) so
    that a mistake stops the run before the test's minutes, not after them."""

    report_dir: Path
    landmarker_file: Path
    limit: int
    threshold: float
    device: str

    @classmethod
    def for_run(cls, cfg: DictConfig) -> Explainer:
        if str(cfg.get("ckpt_path") or "").lower().endswith(".onnx"):
            raise refuse_onnx_explain(cfg.ckpt_path, key="ckpt_path")
        report = (cfg.get("callbacks") or {}).get("report")
        problems = [
            flag_problem(cfg.explain, "explain"),
            count_problem(cfg.get("explain_images"), "explain_images"),
            None if report else "explain=true explains the test report's rows: callbacks.report is off",
        ]
        if any(problems):
            raise ExplainError(
                "; ".join(filter(None, problems)) + ". Fix the option on the command line or in "
                "conf/eval.yaml."
            )
        accelerator = cfg.trainer.get("accelerator", "auto")
        on_cuda = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
        return cls(
            report_dir=Path(report.output_dir),
            landmarker_file=model_file(cfg, "face_landmarker.task"),
            limit=cfg.explain_images,
            threshold=float(report.get("threshold", 0.5)),
            device="cuda" if on_cuda else "cpu",
        )

    def __call__(self, classifier: DeepfakeClassifier) -> dict[str, Any]:
        """Explain the report's images and write the files beside it; return region_shares.json's content."""
        predictions = self.report_dir / "predictions.csv"
        if not predictions.is_file():
            raise ExplainError(
                f"explain=true found no {predictions}: the test report was not written (see above), so "
                "there is nothing to explain. Run the eval again once the test report is there."
            )
        rows = spread(read_predictions(predictions), self.limit)
        explanations = explain_rows(classifier.to(self.device), rows, self.landmarker_file, self.threshold)
        return write_explanations(self.report_dir, explanations, self.threshold)
