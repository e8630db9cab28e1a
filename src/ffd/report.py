"""The test report: metrics.json, predictions.csv, bad_files.txt and the figures a person looks at.

Everything here is computed from one table of predictions (path, label, logit), so the figures, the
CSV and the JSON always agree with each other.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torchmetrics.functional import classification as tmf

from ffd import LABELS
from ffd.errors import UnreadableImageError
from ffd.images import read_rgb

FAKE_COLOUR = "#e34a33"
# What write_report leaves in its folder.
REPORT_FILES = (
    "metrics.json",
    "predictions.csv",
    "bad_files.txt",
    "confusion_matrix.png",
    "roc.png",
    "pr.png",
    "verdicts.png",
    "reliability.png",
)


@dataclass
class Predictions:
    """One row per image; label 0 = real, 1 = fake; the logit is of P(fake)."""

    paths: list[str]
    labels: np.ndarray
    logits: np.ndarray

    @property
    def probs(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits.astype(np.float64)))


def verdict(prob_fake: float, threshold: float = 0.5) -> tuple[str, float]:
    """('fake' or 'real', confidence = the probability of the predicted class). Fake above the threshold,
    strictly, as torchmetrics counts a positive, so that verdicts and metrics agree at the threshold."""
    is_fake = prob_fake > threshold
    return (LABELS[1], prob_fake) if is_fake else (LABELS[0], 1.0 - prob_fake)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity (e.g. the AUROC of a one-class set) as None: JSON has neither,
    and ``json.dumps`` would write a bare ``NaN`` that strict parsers refuse."""
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    return value


def one_class_note(real: int, fake: int) -> str | None:
    """Why AUROC, AUPRC and their curves are missing, or None when both classes are there."""
    if real and fake:
        return None
    only = LABELS[0] if real else LABELS[1]
    return (
        f"AUROC and AUPRC are null and roc.png and pr.png are not drawn: every test image is {only}, and "
        "both classes are needed to rank fakes above reals."
    )


def undefined_ratio_note(metrics: Mapping[str, float]) -> str | None:
    """Why precision, recall or F1 is null: its ratio is 0/0 (no image called fake, or no fake image)."""
    null = [name for name in ("precision", "recall", "f1") if math.isnan(metrics[name])]
    if not null:
        return None
    reasons = [
        reason
        for name, reason in (
            ("precision", "no image was called fake"),
            ("recall", "there is no fake test image"),
        )
        if name in null
    ]
    names = ", ".join(null[:-1]) + " and " + null[-1] if len(null) > 1 else null[0]
    return (
        f"{names} {'are' if len(null) > 1 else 'is'} null, not 0 (a ratio of 0/0): {' and '.join(reasons)}."
    )


def compute_metrics(labels: np.ndarray, logits: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Loss, accuracy, precision, recall, F1, AUROC and AUPRC of P(fake) against the labels.

    A ratio that is 0/0 is NaN (null in metrics.json), not torchmetrics' 0: on a set of reals alone, a
    recall of 0 would read as "no fake caught" when there was none to catch."""
    target = torch.as_tensor(labels, dtype=torch.long)
    logit = torch.as_tensor(logits, dtype=torch.float64)
    prob = torch.sigmoid(logit)
    both_classes = target.unique().numel() == 2
    (_, fp), (fn, tp) = tmf.binary_confusion_matrix(prob, target, threshold).tolist()
    return {
        "loss": torch.nn.functional.binary_cross_entropy_with_logits(logit, target.double()).item(),
        "accuracy": tmf.binary_accuracy(prob, target, threshold).item(),
        "precision": tmf.binary_precision(prob, target, threshold).item() if tp + fp else math.nan,
        "recall": tmf.binary_recall(prob, target, threshold).item() if tp + fn else math.nan,
        "f1": tmf.binary_f1_score(prob, target, threshold).item() if 2 * tp + fp + fn else math.nan,
        "auroc": tmf.binary_auroc(prob, target).item() if both_classes else math.nan,
        "auprc": tmf.binary_average_precision(prob, target).item() if both_classes else math.nan,
    }


def confusion_figure(labels: np.ndarray, probs: np.ndarray, threshold: float) -> Figure:
    matrix = tmf.binary_confusion_matrix(torch.as_tensor(probs), torch.as_tensor(labels).long(), threshold)
    matrix = matrix.numpy()
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    names = [LABELS[0], LABELS[1]]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    row_totals = matrix.sum(axis=1)
    for (row, col), count in np.ndenumerate(matrix):
        # A class with no test image (another generator's fakes alone) has no shares to give.
        text = f"{count}\n{count / row_totals[row]:.1%}" if row_totals[row] else f"{count}"
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, text, ha="center", va="center", color=colour, fontsize=11)
    ax.set_title(f"Confusion matrix (threshold {threshold:g})")
    fig.tight_layout()
    return fig


def _curve_figure(
    x: torch.Tensor,
    y: torch.Tensor,
    label: str,
    baseline: Callable[[Axes], object],
    xlabel: str,
    ylabel: str,
    title: str,
    legend: str,
) -> Figure:
    """A curve in the unit square with its chance baseline: the shape shared by ROC and PR plots. The view
    reaches a little past the square, so that a perfect curve (along its edges) is not hidden by the frame."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
    ax.plot(x.numpy(), y.numpy(), color=FAKE_COLOUR, lw=2, label=label, zorder=3)
    baseline(ax)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(-0.03, 1.03), ylim=(-0.03, 1.03))
    ax.legend(loc=legend)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def roc_figure(labels: np.ndarray, probs: np.ndarray, auroc: float) -> Figure:
    fpr, tpr, _ = tmf.binary_roc(torch.as_tensor(probs), torch.as_tensor(labels).long())
    return _curve_figure(
        fpr,
        tpr,
        f"AUROC = {auroc:.4f}",
        baseline=lambda ax: ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance"),
        xlabel="false positive rate (real called fake)",
        ylabel="true positive rate (fake caught)",
        title="ROC curve",
        legend="lower right",
    )


def pr_figure(labels: np.ndarray, probs: np.ndarray, auprc: float) -> Figure:
    precision, recall, _ = tmf.binary_precision_recall_curve(
        torch.as_tensor(probs), torch.as_tensor(labels).long()
    )
    share = float(np.mean(labels))
    return _curve_figure(
        recall,
        precision,
        f"AUPRC = {auprc:.4f}",
        baseline=lambda ax: ax.axhline(share, color="grey", lw=1, ls="--", label="share of fakes"),
        xlabel="recall (fakes caught)",
        ylabel="precision (flagged that are fake)",
        title="Precision-recall curve (fake = positive)",
        legend="lower left",
    )


def pick_verdict_examples(labels: np.ndarray, probs: np.ndarray, threshold: float, count: int) -> list[int]:
    """The most confident mistakes first (they are what a person wants to see), then correct ones spread
    over the confidence range, the least confident (the closest calls) first; deterministic."""
    predicted = (probs > threshold).astype(int)  # as verdict()
    confidence = np.where(predicted == 1, probs, 1.0 - probs)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][: count // 2]
    right = np.flatnonzero(predicted == labels)
    right = right[np.argsort(confidence[right], kind="stable")]
    take = min(count - len(wrong), len(right))
    spread = right[np.linspace(0, len(right) - 1, take).round().astype(int)] if take > 0 else right[:0]
    return [int(i) for i in dict.fromkeys(np.concatenate([wrong, spread]).tolist())]


def _shortened(path: Path, width: int = 30) -> str:
    """``class/file`` cut in the middle to fit a tile's title; predictions.csv has the whole path."""
    name = f"{path.parent.name}/{path.name}"
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: keep - keep // 2] + "…" + name[-(keep // 2) :]


def verdicts_figure(predictions: Predictions, threshold: float, count: int = 16) -> Figure:
    """A grid of test images with true class, predicted class and confidence, as in the reference."""
    probs = predictions.probs
    chosen = pick_verdict_examples(predictions.labels, probs, threshold, count)
    columns = min(4, max(len(chosen), 1))
    rows = max(math.ceil(len(chosen) / columns), 1)
    # At least three tiles wide, so that the title fits over a grid of one or two images.
    width = 2.6 * max(columns, 3)
    fig, axes = plt.subplots(rows, columns, figsize=(width, 2.9 * rows + 0.3), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, chosen, strict=False):
        path = predictions.paths[index]
        try:
            ax.imshow(read_rgb(path).permute(1, 2, 0).numpy(), interpolation="nearest")
        except UnreadableImageError:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
        truth = LABELS[int(predictions.labels[index])]
        said, confidence = verdict(float(probs[index]), threshold)
        colour = "#1a9850" if said == truth else "#d73027"
        ax.set_title(
            f"true {truth} · said {said} · {confidence:.1%} sure\n{_shortened(Path(path))}",
            fontsize=8.5,
            color=colour,
        )
    fig.suptitle(
        "Test verdicts (green: right, red: wrong); confident mistakes first, then the closest calls",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


# A file name that is not valid UTF-8 (a Latin-1 name from a Windows zip) reaches Python as surrogates;
# written back as its own bytes, so that the listed path opens the file.
FILE_NAMES = "surrogateescape"


def write_predictions_csv(path: Path, predictions: Predictions, threshold: float) -> None:
    with path.open("w", newline="", errors=FILE_NAMES) as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "p_fake", "verdict", "confidence"])
        for file, label, prob in zip(predictions.paths, predictions.labels, predictions.probs, strict=True):
            said, confidence = verdict(float(prob), threshold)
            writer.writerow([file, int(label), repr(float(prob)), said, repr(float(confidence))])  # exact


def write_bad_files(path: Path, bad_files: Sequence[tuple[str, str]]) -> None:
    unique = sorted(set(bad_files))  # a list may name a file twice
    lines = [f"# {len(unique)} unreadable file(s) skipped: path<TAB>reason"]
    lines += [f"{file}\t{reason}" for file, reason in unique]
    path.write_text("\n".join(lines) + "\n", errors=FILE_NAMES)


def write_report(
    output_dir: str | Path,
    predictions: Predictions,
    threshold: float = 0.5,
    model: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    bad_files: Sequence[tuple[str, str]] = (),
    unreadable_in_test: int | None = None,
    extra: Mapping[str, Any] | None = None,
    verdict_images: int = 16,
    decision: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Figure]]:
    """Write the whole report into ``output_dir``; return the metrics summary and the figures.

    ``bad_files`` go to bad_files.txt; ``unreadable_in_test`` (default: their number) is the count beside
    the test images in metrics.json. ``decision`` (a checkpoint's notes["decision"], chosen on validation)
    adds the metrics of ``sigmoid(logit / T) > threshold`` beside those at ``threshold``."""
    from ffd.trust.metrics import reliability_figure, too_small_note, trust_metrics

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels, probs = predictions.labels.astype(int), predictions.probs
    real, fake = int((labels == 0).sum()), int((labels == 1).sum())
    metrics = compute_metrics(labels, predictions.logits, threshold)
    metrics |= trust_metrics(labels, probs, threshold)
    notes = [note for note in (one_class_note(real, fake), undefined_ratio_note(metrics)) if note]
    # Apart from "notes" (about the test set's classes): why an operating point could not be measured.
    chosen: dict[str, Any] = {"metric_notes": [note] if (note := too_small_note(labels)) else []}
    if decision and "threshold" in decision:
        temperature = float(decision.get("temperature") or 1.0)
        calibrated = predictions.logits / temperature
        at = float(decision["threshold"])
        chosen = {
            "decision": dict(decision),
            "metrics_at_chosen_threshold": compute_metrics(labels, calibrated, at)
            | trust_metrics(labels, 1.0 / (1.0 + np.exp(-calibrated.astype(np.float64))), at),
            "test_ece_before_calibration": metrics["ece"],
        }
    (tn, fp), (fn, tp) = tmf.binary_confusion_matrix(
        torch.as_tensor(probs), torch.as_tensor(labels).long(), threshold
    ).tolist()
    summary = {
        "metrics": metrics,
        "threshold": threshold,
        "counts": {
            "images": len(labels),
            "real": real,
            "fake": fake,
            "true_negatives": tn,
            "false_positives": fp,
            "false_negatives": fn,
            "true_positives": tp,
            # of the test files: bad_files.txt may list other splits' too (a training run's report)
            "unreadable_skipped": len(set(bad_files)) if unreadable_in_test is None else unreadable_in_test,
        },
        "labels": {"0": LABELS[0], "1": LABELS[1], "probability": "P(fake)"},
        "model": dict(model or {}),
        "data": dict(data or {}),
        **chosen,
        **dict(extra or {}),
        "notes": notes,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_predictions_csv(out / "predictions.csv", predictions, threshold)
    write_bad_files(out / "bad_files.txt", bad_files)
    text = json.dumps(json_safe(summary), indent=2, default=str, allow_nan=False)
    (out / "metrics.json").write_text(text + "\n")
    figures = {"confusion_matrix": confusion_figure(labels, probs, threshold)}
    if not math.isnan(metrics["auroc"]):
        figures["roc"] = roc_figure(labels, probs, metrics["auroc"])
        figures["pr"] = pr_figure(labels, probs, metrics["auprc"])
    figures["verdicts"] = verdicts_figure(predictions, threshold, verdict_images)
    figures["reliability"] = reliability_figure(labels, probs)
    with warnings.catch_warnings():
        # A file name in a script the font lacks (CJK) is drawn with boxes; the CSV has it exact.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        for name, fig in figures.items():
            fig.savefig(out / f"{name}.png")
    return summary, figures
