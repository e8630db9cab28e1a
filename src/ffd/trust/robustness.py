"""How a detector's scores hold up when the test photos are degraded as a user's photo would be.

``python -m ffd.eval ckpt_path=CKPT|ONNX robustness=default`` re-evaluates the test split once clean and
once per perturbation x severity (JPEG re-encoding, Gaussian blur, downscale-then-upscale, Gaussian
noise, centre crop), and writes robustness.json, robustness.csv and robustness.png into the run folder.
Each perturbation is applied to the decoded uint8 file at its own size, before the model's resize, as a
photo would be degraded before anyone ran a detector on it. Everything is deterministic: the noise of
image ``i`` is drawn from a generator seeded with ``seed`` and ``i``.

The passes run through ``ffd.inference.open_detector``, so a .ckpt (PyTorch) and an exported .onnx
(onnxruntime) are measured by the same code.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch.utils.data import DataLoader, Dataset
from torchmetrics.functional import classification as tmf

from ffd import (
    record,
    resolvers,  # noqa: F401  (run(cfg) resolves ${ffd.model_cache:})
)
from ffd.data.datamodule import FacesDataModule
from ffd.data.dataset import collate_faces
from ffd.data.transforms import eval_transform
from ffd.errors import UnreadableImageError, UserError
from ffd.images import read_rgb
from ffd.inference import Detector, open_detector
from ffd.options import device_problem, threshold_problem
from ffd.report import FAKE_COLOUR, json_safe
from ffd.trust.perturbations import (
    CLEAN,
    PERTURBATIONS,
    perturb,
)

JSON_FILE, CSV_FILE, FIGURE_FILE = "robustness.json", "robustness.csv", "robustness.png"
FPR_LIMIT = 0.01  # TPR is read where at most 1 % of the real images are called fake
COLUMNS = ("perturbation", "severity", "images", "auroc", "ap", "accuracy", "tpr_at_1pct_fpr")


class RobustnessConfigError(UserError):
    """A robustness option that cannot be run: an unknown perturbation, a severity out of its range."""


SETTINGS = ("perturbations", "batch_size", "device", "output_dir")


@dataclass(frozen=True)
class Plan:
    """The passes to run, mildest first within each perturbation."""

    severities: dict[str, list[float]]
    threshold: float
    batch_size: int | None
    device: str
    output_dir: Path

    @property
    def passes(self) -> list[tuple[str, float | None]]:
        return [(CLEAN, None)] + [(name, s) for name, values in self.severities.items() for s in values]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def robustness_plan(settings: Mapping[str, Any] | None, threshold: Any = 0.5) -> Plan | None:
    """The checked ``robustness`` config, or None when it is off (robustness=none); every problem is named
    in one RobustnessConfigError, before the model or the data is read. ``threshold`` (the report's) is
    where the accuracy calls a verdict."""
    if not settings or not settings.get("perturbations"):
        return None
    problems = [f"robustness.{key} is not an option" for key in settings if key not in SETTINGS]
    severities: dict[str, list[float]] = {}
    for name, values in settings["perturbations"].items():
        key = f"robustness.perturbations.{name}"
        kind = PERTURBATIONS.get(name)
        if kind is None:
            problems.append(f"{key}: no such perturbation (known: {', '.join(PERTURBATIONS)})")
            continue
        values = [values] if _is_number(values) else list(values or [])
        bad = [v for v in values if not _is_number(v) or not kind.allowed(v)]
        if not values or bad:
            shown = ", ".join(map(str, bad)) if bad else "an empty list"
            problems.append(f"{key}={shown}: each {kind.unit} must be {kind.allowed_text}")
            continue
        severities[name] = sorted(set(map(float, values)), reverse=kind.harsher_is_lower)
    batch_size = settings.get("batch_size")
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        problems.append(f"robustness.batch_size={batch_size} must be a whole number of 1 or more, or null")
    if problem := threshold_problem(threshold, "callbacks.report.threshold"):
        problems.append(problem)
    if problem := device_problem(str(settings.get("device", "auto"))):
        problems.append(f"robustness.{problem}")
    if problems:
        raise RobustnessConfigError(
            f"{'; '.join(problems)}. Fix it on the command line (e.g. robustness.perturbations.jpeg=[90,50]) "
            "or in conf/robustness/default.yaml."
        )
    output_dir = Path(settings.get("output_dir") or ".")
    return Plan(severities, float(threshold), batch_size, str(settings.get("device", "auto")), output_dir)


class PerturbedFaces(Dataset):
    """The test files, each degraded by ``perturb`` at its own size, then resized as evaluation does; an
    unreadable file gives its reason instead, as in ``FaceImages``."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        image_size: int,
        perturbation: str,
        severity: float | None,
        seed: int,
    ) -> None:
        self.samples = list(samples)
        self.resize = eval_transform(image_size)
        self.perturbation, self.severity, self.seed = perturbation, severity, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, label = self.samples[i]
        try:
            image = read_rgb(path)
        except UnreadableImageError as error:
            return {"path": path, "bad": error.reason}
        return {
            "image": self.resize(perturb(image, self.perturbation, self.severity, self.seed, i)),
            "label": label,
            "path": path,
            "repeat": False,
        }


def tpr_at_fpr(labels: torch.Tensor, probs: torch.Tensor, fpr_limit: float = FPR_LIMIT) -> float:
    """The share of fakes caught at the strictest operating point that calls at most ``fpr_limit`` of the
    reals fake (NaN without both classes)."""
    if labels.unique().numel() < 2:
        return math.nan
    fpr, tpr, _ = tmf.binary_roc(probs, labels)
    return float(tpr[fpr <= fpr_limit].max())


def score(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AP, accuracy at ``threshold`` and TPR at 1 % FPR; the curves NaN without both classes."""
    target = torch.as_tensor(labels, dtype=torch.long)
    prob = torch.as_tensor(probs, dtype=torch.float64)
    both = target.unique().numel() == 2
    return {
        "auroc": tmf.binary_auroc(prob, target).item() if both else math.nan,
        "ap": tmf.binary_average_precision(prob, target).item() if both else math.nan,
        "accuracy": tmf.binary_accuracy(prob, target, threshold).item() if len(target) else math.nan,
        "tpr_at_1pct_fpr": tpr_at_fpr(target, prob),
    }


def run_passes(
    detector: Detector,
    samples: Sequence[tuple[str, int]],
    plan: Plan,
    batch_size: int,
    num_workers: int,
    seed: int,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """One row per pass (clean first): perturbation, severity, images scored and the scores."""
    loaders = [
        DataLoader(
            PerturbedFaces(samples, detector.image_size, name, severity, seed),
            batch_size=plan.batch_size or batch_size,
            num_workers=num_workers,
            collate_fn=partial(collate_faces, image_size=detector.image_size),
        )
        for name, severity in plan.passes
    ]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    rows = []
    with Progress(*columns, console=console or Console(), transient=True) as progress:
        task = progress.add_task("robustness", total=sum(len(loader) for loader in loaders))
        for (name, severity), loader in zip(plan.passes, loaders, strict=True):
            progress.update(
                task, description=f"robustness: {name} {'' if severity is None else f'{severity:g}'}"
            )
            labels, probs = [], []
            for batch in loader:
                if len(batch["label"]):
                    probs.append(detector.run(batch["image"]))
                    labels.append(batch["label"].numpy())
                progress.advance(task)
            label_array = np.concatenate(labels) if labels else np.zeros(0)
            prob_array = np.concatenate(probs) if probs else np.zeros(0)
            rows.append(
                {
                    "perturbation": name,
                    "severity": severity,
                    "images": len(label_array),
                    **score(label_array, prob_array, plan.threshold),
                }
            )
    return rows


def curve_areas(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per perturbation, the mean AUROC and TPR at 1 % FPR over its severities: one number per curve to
    compare detectors by (NaN where a severity's value is)."""
    areas: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(row["perturbation"] for row in rows if row["perturbation"] != CLEAN):
        chosen = [row for row in rows if row["perturbation"] == name]
        areas[name] = {
            key: float(np.mean([math.nan if row[key] is None else row[key] for row in chosen]))
            for key in ("auroc", "tpr_at_1pct_fpr")
        }
    return areas


def robustness_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per perturbation: AUROC and TPR at 1 % FPR from clean to the harshest severity."""
    clean = next(row for row in rows if row["perturbation"] == CLEAN)
    names = list(dict.fromkeys(row["perturbation"] for row in rows if row["perturbation"] != CLEAN))
    fig, axes = plt.subplots(
        1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 3.4), dpi=120, squeeze=False
    )
    for ax, name in zip(axes.flat, names, strict=False):
        chosen = [clean, *(row for row in rows if row["perturbation"] == name)]
        ticks = [CLEAN, *(f"{row['severity']:g}" for row in chosen[1:])]
        for key, label, style in (("auroc", "AUROC", "-"), ("tpr_at_1pct_fpr", "TPR @ 1% FPR", "--")):
            values = [math.nan if row[key] is None else row[key] for row in chosen]
            ax.plot(
                range(len(chosen)),
                values,
                style,
                marker="o",
                color=FAKE_COLOUR if key == "auroc" else "#3182bd",
                label=label,
            )
        ax.set_xticks(range(len(chosen)), ticks)
        ax.set(title=name, xlabel=f"{PERTURBATIONS[name].unit} (harsher →)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Robustness of the test scores to degraded photos", fontsize=10)
    fig.tight_layout()
    return fig


def _cell(value: Any) -> Any:
    """A CSV cell: empty for a null or NaN, every digit of a float (repr), other values as they are."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def write_results(
    output_dir: Path, rows: list[dict[str, Any]], about: Mapping[str, Any]
) -> tuple[dict[str, Any], Figure]:
    """Write robustness.json, robustness.csv and robustness.png; return the summary and the figure."""
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        **about,
        "rows": rows,
        "curve_areas": curve_areas(rows),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(json_safe(summary), indent=2, default=str, allow_nan=False)
    (output_dir / JSON_FILE).write_text(text + "\n")
    with (output_dir / CSV_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_cell(row[key]) for key in COLUMNS])
    figure = robustness_figure(rows)
    figure.savefig(output_dir / FIGURE_FILE)
    return summary, figure


def results_table(rows: Sequence[Mapping[str, Any]], threshold: float) -> Table:
    table = Table(title=f"Robustness of the test scores (accuracy at threshold {threshold:g})")
    for column in ("perturbation", "severity", "images", "AUROC", "AP", "accuracy", "TPR @ 1% FPR"):
        table.add_column(column, justify="left" if column == "perturbation" else "right")
    for row in rows:
        numbers = (row[key] for key in ("auroc", "ap", "accuracy", "tpr_at_1pct_fpr"))
        severity = "" if row["severity"] is None else f"{row['severity']:g}"
        shown = ("n/a" if math.isnan(x) else f"{x:.4f}" for x in numbers)
        table.add_row(row["perturbation"], severity, str(row["images"]), *shown)
    return table


def follow_image_size(cfg: DictConfig, image_size: int) -> None:
    """Resize the data to what the model takes, as ``load_for_run`` does for a checkpoint; a synthetic set
    is drawn at that size (its fake trace does not survive a resize)."""
    with open_dict(cfg):
        cfg.data.image_size = image_size
        if cfg.data.get("synthetic"):
            cfg.data.synthetic.image_size = image_size


def standalone_test_split(cfg: DictConfig, image_size: int) -> FacesDataModule:
    """The test split for a model run without Lightning (an .onnx file), one class allowed as in ffd.eval."""
    follow_image_size(cfg, image_size)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.one_class_test = True
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def measure_robustness(
    cfg: DictConfig, plan: Plan, loggers: Sequence[Any], datamodule: FacesDataModule | None = None
) -> dict[str, float]:
    """Run every pass of ``plan`` with the model at ``cfg.ckpt_path`` (.ckpt or .onnx) on the test split
    of ``datamodule`` (set up by the Lightning test; for an .onnx, made here), write the three files, log
    the figure and curves to TensorBoard; return each curve's mean AUROC."""
    detector = open_detector(cfg.ckpt_path, plan.device)
    datamodule = datamodule or standalone_test_split(cfg, detector.image_size)
    rows = run_passes(
        detector,
        datamodule.index.samples["test"],
        plan,
        datamodule.batch_size,
        datamodule.num_workers,
        cfg.seed,
    )
    about = {
        "model": detector.about,
        "threshold": plan.threshold,
        "seed": cfg.seed,
        "fpr_limit": FPR_LIMIT,
        "data": {"root": str(datamodule.index.root), "image_size": detector.image_size},
        "labels": {"0": "real", "1": "fake", "probability": "P(fake)"},
    }
    summary, figure = write_results(plan.output_dir, rows, about)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("robustness/curves", figure, global_step=0)
            for name in summary["curve_areas"]:
                chosen = [rows[0], *(row for row in rows if row["perturbation"] == name)]
                for step, row in enumerate(chosen):  # step 0 is the clean pass, then harsher and harsher
                    for key in ("auroc", "tpr_at_1pct_fpr"):
                        if not math.isnan(row[key]):
                            logger.experiment.add_scalar(f"robustness/{name}/{key}", row[key], step)
            logger.experiment.flush()
    plt.close(figure)
    Console().print(results_table(rows, plan.threshold))
    areas = {name: area["auroc"] for name, area in summary["curve_areas"].items()}
    record.info(
        "Robustness: %d pass(es) over %d test image(s); mean AUROC per perturbation: %s; written to %s",
        len(rows),
        rows[0]["images"],
        json.dumps(json_safe(areas)),
        plan.output_dir / JSON_FILE,
    )
    return {f"robustness/{name}/mean_auroc": value for name, value in areas.items()}
