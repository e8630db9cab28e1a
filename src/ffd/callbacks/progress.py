"""What a run shows on the console as it goes: Lightning's RichProgressBar, reading the training metrics
only every few steps, and its RichModelSummary without a column of zero FLOPs."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from rich import get_console
from rich.table import Table

# RichModelSummary's column styles, by column name (the others: left-justified, no style).
_COLUMNS: dict[str, dict[str, Any]] = {
    " ": {"style": "dim"},
    "Name": {"no_wrap": True},
    "Params": {"justify": "right"},
    "Params per Device": {"justify": "right"},
    "FLOPs": {"justify": "right"},
    "In sizes": {"justify": "right", "style": "white"},
    "Out sizes": {"justify": "right", "style": "white"},
}


class ModelSummary(RichModelSummary):
    """Lightning's RichModelSummary, leaving out the FLOPs column and total when no FLOPs were counted.

    Lightning 2.6 counts FLOPs during a forward pass on the module's ``example_input_array`` and, without
    one, prints a FLOPs column of 0 and "Total FLOPs: 0". ffd sets none: the pass would go through the data
    module's batch hook (which augments training batches on the GPU) and, with ``callbacks.speed.compile``,
    compile the network a second time for eval mode; it costs only 0.26 s for DenseNet121 at 256 px on 2
    CPU cores. Lightning draws the table in one static method with no switch for the column, hence this
    copy of it. A module that sets an example input gets its FLOPs shown.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Without Lightning's warning that under bf16-mixed or 16-mixed the model size "will not be
        accurate": mixed precision keeps the weights in float32, the size it then counts."""
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"Precision \S+-mixed is not supported by the model summary"
            )
            super().on_fit_start(trainer, pl_module)

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,  # Lightning < 2.5 counts none
        **summarize_kwargs: Any,
    ) -> None:
        columns = [(name, values) for name, values in summary_data if total_flops or name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, **_COLUMNS.get(name, {}))
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        totals = {
            "Trainable params": get_human_readable_count(trainable_parameters),
            "Non-trainable params": get_human_readable_count(total_parameters - trainable_parameters),
            "Total params": get_human_readable_count(total_parameters),
            "Total estimated model params size (MB)": get_formatted_model_size(model_size),
            "Modules in train mode": total_training_modes["train"],
            "Modules in eval mode": total_training_modes["eval"],
        }
        if total_flops:
            totals["Total FLOPs"] = get_human_readable_count(total_flops)
        grid = Table.grid()
        for name, value in totals.items():
            grid.add_row(f"[bold]{name}[/]: {value}")
        console = get_console()
        console.print(table)
        console.print(grid)


class ProgressBar(RichProgressBar):
    """A RichProgressBar that shows ``train_metrics`` (read every ``metrics_every_n_steps`` batches and at
    the end of each epoch) next to the metrics logged with ``prog_bar=True``.

    Reading a metric copies it from the GPU, which waits for every queued kernel: once per step, that
    stalls the GPU while Python prepares the next step. Lightning converts every ``prog_bar=True`` metric
    logged on step after each step, so ``DeepfakeClassifier`` logs its training loss without ``prog_bar``
    and this bar reads it from ``trainer.callback_metrics`` instead. The bar itself moves every batch.

    Args:
        metrics_every_n_steps: how often the training metrics are read (default: the trainer's
            ``log_every_n_steps``, when the logger reads them anyway).
        train_metrics: the training metrics shown (names as logged).
        **kwargs: RichProgressBar's own (``refresh_rate``, ``leave``, ``theme``, ...).
    """

    def __init__(
        self,
        metrics_every_n_steps: int | None = None,
        train_metrics: Sequence[str] = ("train/loss",),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metrics_every_n_steps = metrics_every_n_steps
        self.train_metrics = tuple(train_metrics)
        self._train_values: dict[str, float] = {}
        self._skip_metrics = False

    def _read_train_metrics(self, trainer: pl.Trainer) -> None:
        metrics = trainer.callback_metrics
        self._train_values = {name: float(metrics[name]) for name in self.train_metrics if name in metrics}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        every = self.metrics_every_n_steps or trainer.log_every_n_steps or 1
        # The optimizer steps so far, as the logger counts them (not batch_idx, which restarts each epoch):
        # the bar then reads the loss on the steps where the logger has read it anyway.
        self._skip_metrics = trainer.global_step % every != 0
        if not self._skip_metrics:
            self._read_train_metrics(trainer)
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._skip_metrics = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._read_train_metrics(trainer)  # the epoch's mean
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return {**super().get_metrics(trainer, pl_module), **self._train_values}

    def _update_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._skip_metrics:
            super()._update_metrics(trainer, pl_module)

    def _get_train_description(self, current_epoch: int) -> str:
        # Lightning writes "Epoch 0/-2" for max_epochs=-1 (a run bounded by max_steps, as in ffd.bench).
        description = super()._get_train_description(current_epoch)
        if self.trainer.max_epochs is not None and self.trainer.max_epochs < 0:
            description = description.replace(f"/{self.trainer.max_epochs - 1}", "", 1)
        return description
