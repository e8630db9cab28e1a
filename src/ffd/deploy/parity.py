"""How an exported file compares with its checkpoint: P(fake) differences, changed verdicts, metrics,
latency, file size.

Every figure of ``export_report.json`` is computed here, so the export and the speed benchmark
(benchmarks/export.py) time models the same way: repeated runs after warm-up, summarised by their median.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ffd.report import compute_metrics

REFERENCE = "torch"  # the checkpoint's network in PyTorch eager fp32: what every file is compared with
QUALITY = ("accuracy", "auroc", "auprc")
Predictor = Callable[[np.ndarray], np.ndarray]  # uint8 or float RGB (N, 3, S, S) -> P(fake) (N,)


def torch_predictor(net: nn.Module) -> Predictor:
    """PyTorch eager fp32 on the CPU, as the reference: RGB batch -> P(fake)."""
    net = net.eval().cpu()

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(net(torch.as_tensor(images).float())).numpy()

    return predict


def collect_probabilities(
    predictors: Mapping[str, Predictor], batches: Iterable[Mapping[str, Any]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run every predictor on the same loader batches: (labels, {name: P(fake)})."""
    labels: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {name: [] for name in predictors}
    for batch in batches:
        if batch["image"].shape[0] == 0:  # every file of the batch was unreadable
            continue
        images = batch["image"].numpy()
        labels.append(batch["label"].numpy())
        for name, predict in predictors.items():
            probs[name].append(np.asarray(predict(images), dtype=np.float32).reshape(-1))
    if not labels:
        return np.zeros(0, dtype=np.int64), {name: np.zeros(0, dtype=np.float32) for name in predictors}
    return np.concatenate(labels).astype(np.int64), {name: np.concatenate(p) for name, p in probs.items()}


def quality(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, AUROC and AUPRC of P(fake), by the same code as the test report."""
    logits = torch.logit(torch.as_tensor(probs, dtype=torch.float64)).numpy()  # 0 and 1 give -inf, inf
    metrics = compute_metrics(labels, logits, threshold)
    return {name: metrics[name] for name in QUALITY}


def differences(reference: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """max and mean |P - P_reference| over the images."""
    delta = np.abs(probs.astype(np.float64) - reference.astype(np.float64))
    return {
        "max_abs_diff": float(delta.max(initial=0.0)),
        "mean_abs_diff": float(delta.mean()) if delta.size else 0.0,
    }


def changed_verdicts(reference: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, int | float]:
    """How many images (and what share) get another verdict than the reference's at ``threshold``: a small
    mean |ΔP| can hide the few images that cross it. Fake strictly above the threshold, compared in float64,
    as ffd.predict's verdicts are, so the count agrees with two of its CSVs."""
    fake = reference.astype(np.float64) > threshold
    changed = int(np.count_nonzero(fake != (probs.astype(np.float64) > threshold)))
    return {"verdicts_changed": changed, "verdicts_changed_share": changed / fake.size if fake.size else 0.0}


def times_ms(run: Callable[[], object], warmup: int = 3, repeats: int = 10) -> list[float]:
    """Wall time of each of ``repeats`` calls of ``run()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(run: Callable[[], object], warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of ``run()`` in milliseconds, after ``warmup`` untimed calls."""
    return statistics.median(times_ms(run, warmup, repeats))


def latency(
    predict: Predictor, image_size: int, batch_sizes: Iterable[int], warmup: int, repeats: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{"batch_<n>": {"median", "min", "p90"} ms per batch of n} on random RGB images (the compute does not
    depend on them). The spread of the same runs: on a loaded machine the median alone can be several times
    the unloaded figure (PyTorch eager most of all), and the min shows it."""
    rng = np.random.default_rng(seed)
    result = {}
    for size in batch_sizes:
        images = rng.integers(0, 256, (size, 3, image_size, image_size)).astype(np.float32)
        times = times_ms(lambda images=images: predict(images), warmup, repeats)
        result[f"batch_{size}"] = {
            "median": statistics.median(times),
            "min": min(times),
            "p90": float(np.percentile(times, 90)),
        }
    return result
