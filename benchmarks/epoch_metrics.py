"""Host time per training step spent on logging the epoch metrics, early and late in a Kaggle-length epoch.

    python benchmarks/epoch_metrics.py [--steps 781] [--window 100]

Two ways of logging the six epoch metrics (accuracy ... AUPRC), in one run on the same tiny network, so
the step's own compute is small next to the loop's host work:

- per step: ``self.log_dict(metric_collection, on_epoch=True)`` at every step, the usual Lightning idiom.
  Each call goes through Lightning's result collection, which moves each logged Metric to the device;
- at epoch end: what ``DeepfakeClassifier`` does (update per step, ``compute`` + ``log_dict`` once).

Prints the mean milliseconds per step over ``--window`` steps after a warm-up of 20, and over the last
``--window`` steps of one epoch (781 steps = the Kaggle training split at batch 128), and the ratios.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

from ffd.models.classifier import DeepfakeClassifier

WARMUP = 20


class PerStepLogging(DeepfakeClassifier):
    """The usual idiom: the Metric objects passed to ``self.log_dict`` at every step."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(batch["label"]))
        return out

    def on_train_epoch_end(self) -> None:  # Lightning computes and resets the logged metrics itself
        pass


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.times.append(time.perf_counter())


def step_times(model_class: type[DeepfakeClassifier], steps: int, batch_size: int) -> list[float]:
    torch.manual_seed(0)
    model = model_class(net={"name": "vit", "image_size": 16, "dim": 16, "depth": 1})
    images = torch.randint(0, 256, (batch_size, 3, 16, 16), dtype=torch.uint8)
    batch = {"image": images, "label": (torch.arange(batch_size) % 2).float()}
    loader = torch.utils.data.DataLoader([batch] * steps, batch_size=None)
    clock = StepClock()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(model, loader)
    return [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=781)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier figures on a shared machine
    results = {}
    for name, model_class in (("per step", PerStepLogging), ("at epoch end", DeepfakeClassifier)):
        times = step_times(model_class, args.steps, args.batch_size)
        first = sum(times[WARMUP : WARMUP + args.window]) / args.window * 1e3
        last = sum(times[-args.window :]) / args.window * 1e3
        results[name] = (first, last)
    table = Table(
        title=f"ms per training step, tiny ViT, batch {args.batch_size}, one {args.steps}-step epoch"
    )
    for column in (
        "epoch metrics logged",
        f"steps {WARMUP}-{WARMUP + args.window}",
        f"last {args.window} steps",
    ):
        table.add_column(column, justify="left" if column.startswith("epoch") else "right")
    for name, (first, last) in results.items():
        table.add_row(name, f"{first:.1f}", f"{last:.1f}")
    (old_first, old_last), (new_first, new_last) = results.values()
    table.add_row("per step / at epoch end", f"{old_first / new_first:.2f}x", f"{old_last / new_last:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
