"""The decision rule: a threshold chosen on the validation split, never on test, and a temperature.

The decision is ``sigmoid(logit / T) > threshold``: with calibration on, the threshold applies to the
calibrated probability, so the two are chosen together on the same validation logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch

from ffd.errors import UserError
from ffd.trust import metrics

POLICIES = ("fixed", "eer", "fpr")
CALIBRATIONS = ("none", "temperature")


class DecisionOptionError(UserError):
    """A threshold.* or calibration option that cannot be used."""


def check_options(policy: str, value: float, fpr: float, calibration: str) -> None:
    """Refuse bad options before any work (train calls this before fitting)."""
    if policy not in POLICIES:
        raise DecisionOptionError(
            f"threshold.policy={policy} is unknown: pick one of {', '.join(POLICIES)} (fixed uses "
            "threshold.value, eer the equal-error point, fpr the false-positive budget threshold.fpr)."
        )
    if calibration not in CALIBRATIONS:
        raise DecisionOptionError(
            f"calibration={calibration} is unknown: pick one of {', '.join(CALIBRATIONS)}."
        )
    if policy == "fpr" and not (isinstance(fpr, int | float) and 0 < fpr < 1):
        raise DecisionOptionError(
            f"threshold.fpr={fpr} is not a false-positive rate: pick a value strictly between 0 and 1, "
            "e.g. threshold.fpr=0.01 for 1 real in 100 called fake."
        )
    if policy == "fixed" and not (isinstance(value, int | float) and 0 <= value <= 1):
        raise DecisionOptionError(
            f"threshold.value={value} is not a probability: pick a value between 0 and 1."
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """T minimising the NLL of sigmoid(logit / T), searched on log T (LBFGS)."""
    target = torch.as_tensor(labels, dtype=torch.float64)
    logit = torch.as_tensor(logits, dtype=torch.float64)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit / log_t.exp(), target)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.exp().item())


def choose(
    labels: np.ndarray, logits: np.ndarray, policy: str, value: float, fpr: float, calibration: str
) -> dict[str, Any]:
    """The decision notes for a checkpoint, from validation labels and logits."""
    check_options(policy, value, fpr, calibration)
    labels = np.asarray(labels).astype(int)
    logits = np.asarray(logits, dtype=np.float64)
    temperature = fit_temperature(labels, logits) if calibration == "temperature" else 1.0
    probs = _sigmoid(logits / temperature)
    if policy == "fixed":
        threshold = float(value)
    elif policy == "eer":
        threshold = metrics.eer(labels, probs)[1]
        if math.isnan(threshold):
            raise DecisionOptionError(
                "threshold.policy=eer needs real and fake validation images: the validation split has one "
                "class only. Use threshold.policy=fixed, or a dataset with both classes in validation."
            )
    else:
        found = metrics.tpr_at_fpr(labels, probs, fpr)
        if found is None:
            raise DecisionOptionError(
                f"threshold.policy=fpr with threshold.fpr={fpr} needs at least {math.ceil(1 / fpr)} real "
                f"validation images, and there are {int((labels == 0).sum())}: raise threshold.fpr or "
                "use threshold.policy=eer."
            )
        threshold = found[1]
    return {
        "policy": policy,
        "threshold": threshold,
        "fpr_target": float(fpr) if policy == "fpr" else None,
        "temperature": temperature,
        "calibration": calibration,
        "chosen_on": "validation",
        "val_images": len(labels),
        "ece_before": metrics.ece(labels, _sigmoid(logits)),
        "ece_after": metrics.ece(labels, probs),
    }


@dataclass(frozen=True)
class Decision:
    """How to turn a P(fake) into a verdict: ``calibrate(p) > threshold``."""

    threshold: float
    temperature: float
    source: str

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        """An uncalibrated P(fake) mapped to the calibrated one, sigmoid(logit(p) / T); unchanged at T = 1."""
        if self.temperature == 1:
            return np.asarray(p, dtype=np.float64)
        p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
        return _sigmoid(np.log(p / (1 - p)) / self.temperature)

    def is_fake(self, p: np.ndarray) -> np.ndarray:
        return self.calibrate(p) > self.threshold


def decision_for(notes: Mapping[str, Any], override: float | None) -> Decision:
    """The decision to apply: a threshold on the command line wins (with the stored temperature), then
    the one stored in the checkpoint's notes, then 0.5."""
    stored = notes.get("decision") if isinstance(notes, Mapping) else None
    stored = stored if isinstance(stored, Mapping) else {}
    temperature = float(stored.get("temperature") or 1.0)
    if override is not None:
        return Decision(float(override), temperature, "threshold= on the command line")
    if "threshold" in stored:
        return Decision(
            float(stored["threshold"]),
            temperature,
            f"chosen on {stored.get('chosen_on', 'validation')} (policy {stored.get('policy', '?')})",
        )
    return Decision(0.5, 1.0, "default 0.5 (the model stores none)")


class ValidationLogits(L.Callback):
    """Collects the validation logits and labels of a ``trainer.validate`` run, to choose the decision."""

    def __init__(self) -> None:
        self.logits: list[float] = []
        self.labels: list[int] = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if outputs and "logits" in outputs:
            self.logits += outputs["logits"].float().cpu().tolist()
            self.labels += outputs["labels"].int().cpu().tolist()
