"""The validation-chosen decision: temperature fit, policies, precedence, bad options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import TINY, run_in_process
from ffd.trust import decision, metrics


def _logits(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z); the model reports z * T, over- (T > 1) or under-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=n)
    labels = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(int)
    return labels, z * temperature


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_temperature_fit_recovers_a_known_scale(temperature: float) -> None:
    labels, logits = _logits(20_000, temperature)
    assert decision.fit_temperature(labels, logits) == pytest.approx(temperature, rel=0.1)


def test_choose_calibrates_and_picks_the_threshold_by_policy() -> None:
    labels, logits = _logits(5000, 3.0, seed=1)
    notes = decision.choose(labels, logits, "fpr", 0.5, 0.01, "temperature")
    assert notes["ece_after"] < notes["ece_before"]
    calibrated = decision.Decision(notes["threshold"], notes["temperature"], "").calibrate(
        1 / (1 + np.exp(-logits))
    )
    assert np.mean(calibrated[labels == 0] > notes["threshold"]) <= 0.01
    eer = decision.choose(labels, logits, "eer", 0.5, 0.01, "none")
    assert eer["threshold"] == pytest.approx(metrics.eer(labels, 1 / (1 + np.exp(-logits)))[1])
    assert decision.choose(labels, logits, "fixed", 0.7, 0.01, "none")["threshold"] == 0.7


def test_a_separable_validation_split_gives_a_decision_that_calls_its_fakes_fake() -> None:
    """The quickstart case: validation perfectly separated, so the fitted temperature is sharp (T << 1) and
    the calibrated P(fake) of every fake is 1.0; the stored threshold was 1.0 and every verdict real."""
    labels = np.array([0] * 200 + [1] * 200)
    logits = np.concatenate([np.linspace(-12.0, -4.0, 200), np.linspace(4.0, 12.0, 200)])
    notes = decision.choose(labels, logits, "eer", 0.5, 0.01, "temperature")
    assert notes["temperature"] < 1
    rule = decision.Decision(notes["threshold"], notes["temperature"], "")
    said = rule.is_fake((1 / (1 + np.exp(-logits))).astype(np.float32))  # as a model's float32 output
    assert said[labels == 1].all() and not said[labels == 0].any(), notes


def test_decision_for_precedence() -> None:
    stored = {"decision": {"threshold": 0.8, "temperature": 2.0, "policy": "eer", "chosen_on": "validation"}}
    assert decision.decision_for(stored, 0.3) == decision.Decision(0.3, 2.0, "threshold= on the command line")
    chosen = decision.decision_for(stored, None)
    assert (chosen.threshold, chosen.temperature) == (0.8, 2.0) and "eer" in chosen.source
    assert decision.decision_for({}, None).threshold == 0.5
    p = np.array([0.1, 0.5, 0.9])
    assert np.allclose(decision.decision_for({}, None).calibrate(p), p)


@pytest.mark.parametrize(
    ("policy", "fpr", "calibration", "option"),
    [
        ("best", 0.01, "none", "threshold.policy"),
        ("fpr", 1.5, "none", "threshold.fpr"),
        ("fpr", 0.0, "none", "threshold.fpr"),
        ("eer", 0.01, "platt", "calibration"),
    ],
)
def test_bad_options_name_the_option(policy: str, fpr: float, calibration: str, option: str) -> None:
    with pytest.raises(decision.DecisionOptionError, match=option):
        decision.check_options(policy, 0.5, fpr, calibration)


def test_a_tiny_training_run_stores_the_decision_and_reports_the_trust_metrics(tiny_runs) -> None:
    """The session's tiny DenseNet run: TINY with train.yaml's threshold.policy (eer) and calibration."""
    run = tiny_runs["densenet"]
    best = next(file for file in (run / "checkpoints").glob("*.ckpt") if file.name != "last.ckpt")
    stored = torch.load(best, map_location="cpu", weights_only=True)["ffd"]["decision"]
    assert stored["chosen_on"] == "validation" and stored["policy"] == "eer"
    assert stored["temperature"] > 0 and 0 <= stored["threshold"] <= 1
    summary = json.loads((run / "report" / "metrics.json").read_text())
    assert {"eer", "tpr_at_fpr_1%", "ece", "brier"} <= set(summary["metrics"])
    assert summary["decision"]["threshold"] == pytest.approx(stored["threshold"])
    assert (run / "report" / "reliability.png").is_file()


def test_a_bad_threshold_option_is_refused_before_fitting(tmp_path: Path) -> None:
    result = run_in_process("ffd.train", *TINY, "threshold.fpr=2", "threshold.policy=fpr", root=tmp_path)
    assert result.returncode == 1
    assert "threshold.fpr" in result.stderr + result.stdout
    assert not list(tmp_path.rglob("*.ckpt"))
