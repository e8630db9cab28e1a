"""Lightning's RichProgressBar, reading the logged metrics only every few training steps."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """A RichProgressBar that shows the training metrics every ``metrics_every_n_steps`` batches.

    Showing a metric copies it from the GPU, which waits for every queued kernel: once per step that
    stalls the GPU while Python prepares the next step. The bar itself still moves every batch.

    Args:
        metrics_every_n_steps: how often the training metrics are read (default: the trainer's
            ``log_every_n_steps``, when the logger reads them anyway).
        **kwargs: RichProgressBar's own (``refresh_rate``, ``leave``, ``theme``, ...).
    """

    def __init__(self, metrics_every_n_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics_every_n_steps = metrics_every_n_steps
        self._skip_metrics = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = self.metrics_every_n_steps or trainer.log_every_n_steps or 1
        self._skip_metrics = (batch_idx + 1) % every != 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._skip_metrics = False

    def _update_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._skip_metrics:
            super()._update_metrics(trainer, pl_module)
