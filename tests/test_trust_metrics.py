"""The trust metrics against brute-force numpy computations on random scores."""

from __future__ import annotations

import numpy as np
import pytest

from ffd.trust import metrics


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probs = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * (labels * 2 - 1))))
    return labels, probs


def _rates(labels: np.ndarray, probs: np.ndarray, t: float) -> tuple[float, float]:
    said = probs > t  # ffd's rule (ffd.report.verdict, torchmetrics' threshold): fake above, strictly
    return float(said[labels == 0].mean()), float(said[labels == 1].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_is_where_false_alarms_meet_misses(seed: int) -> None:
    labels, probs = _scores(2000, seed)
    rate, threshold = metrics.eer(labels, probs)
    fpr, tpr = _rates(labels, probs, threshold)
    assert abs(fpr - (1 - tpr)) < 0.01
    assert abs(rate - fpr) < 0.01
    gaps = [abs(f - (1 - t)) for f, t in (_rates(labels, probs, s) for s in np.append(probs, -1.0))]
    assert abs(fpr - (1 - tpr)) <= min(gaps) + 1e-9


@pytest.mark.parametrize("target", metrics.FPR_TARGETS)
def test_tpr_at_fpr_respects_the_budget_and_is_the_best_within_it(target: float) -> None:
    labels, probs = _scores(4000, 3)
    found = metrics.tpr_at_fpr(labels, probs, target)
    assert found is not None
    tpr, threshold = found
    fpr, brute_tpr = _rates(labels, probs, threshold)
    assert fpr <= target
    assert tpr == pytest.approx(brute_tpr)
    within = [
        t for f, t in (_rates(labels, probs, s) for s in np.append(np.unique(probs), -1.0)) if f <= target
    ]
    assert tpr == pytest.approx(max(within))


def test_a_threshold_keeps_its_operating_point_when_the_fakes_scores_saturate_at_one() -> None:
    """A sharp temperature on a separable validation split puts every fake at exactly 1.0: the EER
    threshold was 1.0 itself, and ``p > 1.0`` then called every fake real."""
    labels = np.array([0] * 200 + [1] * 200)
    probs = np.concatenate([np.linspace(0.0, 0.3, 200), np.ones(200)])
    assert _rates(labels, probs, metrics.eer(labels, probs)[1]) == (0.0, 1.0)
    false_alarms, caught = _rates(labels, probs, metrics.tpr_at_fpr(labels, probs, 0.01)[1])
    assert false_alarms <= 0.01 and caught == 1.0


def test_small_split_gives_none_and_a_note() -> None:
    labels, probs = _scores(300, 4)  # ~150 reals: 1 % measurable, 0.5 % and 0.1 % not
    assert metrics.tpr_at_fpr(labels, probs, 0.01) is not None
    assert metrics.tpr_at_fpr(labels, probs, 0.001) is None
    note = metrics.too_small_note(labels)
    assert note is not None and "0.1%" in note and "1.0%" not in note
    flat = metrics.trust_metrics(labels, probs, 0.5)
    assert flat["tpr_at_fpr_0_1%"] is None and flat["tpr_at_fpr_1%"] is not None


def test_ece_of_calibrated_probabilities_is_near_zero_and_brier_matches() -> None:
    rng = np.random.default_rng(5)
    probs = rng.uniform(size=50_000)
    labels = (rng.uniform(size=probs.size) < probs).astype(int)
    assert metrics.ece(labels, probs) < 0.01
    overconfident = np.where(probs > 0.5, 1.0, 0.0)
    assert metrics.ece(labels, overconfident) > 0.2
    assert metrics.brier(labels, probs) == pytest.approx(np.mean((probs - labels) ** 2))


def test_balanced_accuracy_weighs_each_class_equally() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    probs = np.ones(100)  # everything called fake
    assert metrics.balanced_accuracy(labels, probs, 0.5) == pytest.approx(0.5)


def test_reliability_figure_draws() -> None:
    labels, probs = _scores(500, 6)
    fig = metrics.reliability_figure(labels, probs)
    assert "ECE" in fig.axes[0].get_title()
