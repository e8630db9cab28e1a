"""Metrics a person can act on: the EER, the catch rate at a false-alarm budget, calibration.

AUROC says how well fakes rank above reals; these say what happens at an operating point: how many
fakes are caught if 1 real in 100 may be flagged, and whether "90 % fake" means 9 in 10.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torchmetrics.functional import classification as tmf

FAKE_COLOUR = "#e34a33"  # as ffd.report
FPR_TARGETS = (0.01, 0.005, 0.001)
ECE_BINS = 15


def _roc(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fpr, tpr, thresholds = tmf.binary_roc(
        torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(labels).long()
    )
    return fpr.numpy(), tpr.numpy(), thresholds.numpy()


def eer(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(equal error rate, its threshold): where the false-alarm rate meets the miss rate on the ROC.

    NaN for a split with one class only."""
    if len(np.unique(labels)) < 2:
        return math.nan, math.nan
    fpr, tpr, thresholds = _roc(labels, probs)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fpr - fnr)))
    return float((fpr[i] + fnr[i]) / 2), _strict_threshold(probs, thresholds, i)


def tpr_at_fpr(labels: np.ndarray, probs: np.ndarray, target: float) -> tuple[float, float] | None:
    """(share of fakes caught, threshold) at the lowest threshold whose false-positive rate stays within
    ``target``; None when the split has fewer than 1/target reals, too few to measure that rate."""
    real = int((np.asarray(labels) == 0).sum())
    if real < 1 / target or real == len(labels):
        return None
    fpr, tpr, thresholds = _roc(labels, probs)
    ok = np.flatnonzero(fpr <= target + 1e-12)
    i = int(ok[-1])
    return float(tpr[i]), _strict_threshold(probs, thresholds, i)


def _strict_threshold(probs: np.ndarray, thresholds: np.ndarray, i: int) -> float:
    """The threshold giving the ROC's i-th operating point under ffd's rule, fake when p > threshold.

    A ROC point counts p >= thresholds[i] as fake; used as is with ``>``, every score equal to it would
    flip to real: with saturated probabilities (all validation fakes at exactly 1.0, as a sharp
    temperature gives on a separable split), that was every fake. Halfway to the next lower score makes the
    same calls under ``>``. Point 0 is torchmetrics' "nothing is fake", which 1.0 keeps."""
    if i == 0:
        return 1.0
    at = float(thresholds[i])
    below = np.asarray(probs, dtype=np.float64)
    below = below[below < at]
    return float((at + below.max()) / 2) if below.size else float(np.nextafter(at, -np.inf))


def too_small_note(labels: np.ndarray, targets: tuple[float, ...] = FPR_TARGETS) -> str | None:
    """Why a TPR at some FPR is n/a: a false-positive rate of 1/N needs at least N reals."""
    real = int((np.asarray(labels) == 0).sum())
    missing = [t for t in targets if real < 1 / t]
    if not missing or real == len(labels):
        return None
    names = ", ".join(f"{t:.1%}" for t in missing)
    return (
        f"TPR at FPR {names} is n/a: the split has {real} real image(s), and a false-positive rate of "
        f"1/N needs at least N reals to be measured."
    )


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(fake), in ``bins`` equal-width bins (torchmetrics)."""
    return tmf.binary_calibration_error(
        torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(labels).long(), n_bins=bins
    ).item()


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared error of P(fake) against the label: lower is better, 0.25 for a constant 0.5."""
    return float(np.mean((np.asarray(probs, dtype=np.float64) - np.asarray(labels)) ** 2))


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    """Mean of the recall of each class, so that a split of mostly fakes cannot hide missed reals."""
    labels = np.asarray(labels)
    said = np.asarray(probs) > threshold
    recalls = [float(np.mean(said[labels == c] == c)) for c in (0, 1) if (labels == c).any()]
    return float(np.mean(recalls))


def trust_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float | None]:
    """The metrics above as flat metrics.json keys; None where the split is too small."""
    rate, at = eer(labels, probs)
    out: dict[str, float | None] = {
        "balanced_accuracy": balanced_accuracy(labels, probs, threshold),
        "eer": rate,
        "eer_threshold": at,
    }
    for target in FPR_TARGETS:
        found = tpr_at_fpr(labels, probs, target)
        key = f"{target * 100:g}%".replace(".", "_")
        out[f"tpr_at_fpr_{key}"] = None if found is None else found[0]
        out[f"threshold_at_fpr_{key}"] = None if found is None else found[1]
    out["ece"] = ece(labels, probs)
    out["brier"] = brier(labels, probs)
    return out


def reliability_figure(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> Figure:
    """Share of fakes against mean P(fake) per bin: on the diagonal, "p fake" means p of them are."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1], right=True), 0, bins - 1)
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=120)
    for b in range(bins):
        mask = which == b
        if mask.any():
            ax.bar(
                edges[b],
                labels[mask].mean(),
                width=1 / bins,
                align="edge",
                color=FAKE_COLOUR,
                alpha=0.75,
                edgecolor="white",
            )
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    ax.set(
        xlabel="predicted P(fake)",
        ylabel="share that is fake",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"Reliability (ECE = {ece(labels, probs, bins):.4f})",
    )
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
