"""Lightning callback that turns a test run into the report (see ``ffd.report``) and lists bad files.

It gathers the test predictions of every rank, and rank 0 alone writes; the figures also go to
TensorBoard, and ``hp_metric`` is set to the test AUROC so the hparams tab ranks runs by it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from rich.table import Table

from ffd import record
from ffd.console import table_console
from ffd.errors import UserError
from ffd.options import threshold_problem
from ffd.report import Predictions, json_safe, write_bad_files, write_report


def _shown(value: float | None) -> str:
    """A metric as the table shows it; n/a for one the split cannot give (None or NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def gather_lists(items: list[Any], trainer: L.Trainer) -> list[Any]:
    """All ranks' lists, concatenated (a no-op on one process)."""
    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return items
    gathered: list[list[Any]] = [[] for _ in range(trainer.world_size)]
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


class ReportWriter(L.Callback):
    """Collect test predictions and unreadable files; write ``report/`` when the test epoch ends, print its
    table when the test ends.

    Args:
        output_dir: where metrics.json, predictions.csv, bad_files.txt and the PNGs go.
        threshold: P(fake) above which an image is called fake.
        verdict_images: how many test images the verdicts.png grid shows.
    """

    def __init__(self, output_dir: str | Path, threshold: float = 0.5, verdict_images: int = 16) -> None:
        self.output_dir = Path(output_dir)
        if problem := threshold_problem(threshold, "callbacks.report.threshold"):
            raise UserError(f"{problem}.")
        self.threshold = float(threshold)  # threshold=1 is an int, which torchmetrics refuses
        self.verdict_images = verdict_images
        self.bad_files: set[tuple[str, str]] = set()  # every split's, for bad_files.txt
        self._test_bad: set[tuple[str, str]] = set()  # the test split's, for the counts beside its metrics
        self._rows: list[tuple[str, int, float]] = []
        self.summary: dict[str, Any] | None = None
        # notes["decision"] of the tested checkpoint (train sets it; eval's model carries it in .notes)
        self.decision: dict[str, Any] | None = None

    def _collect_bad(self, batch: Any) -> set[tuple[str, str]]:
        bad = batch.get("bad", ()) if isinstance(batch, dict) else ()
        found = {(str(path), str(reason)) for path, reason in bad}
        self.bad_files |= found
        return found

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._collect_bad(batch)

    def on_validation_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect_bad(batch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A fit that is not tested (test=false) lists the files it skipped too; a test rewrites the list."""
        self._write_fit_bad_files(trainer, set(gather_lists(sorted(self.bad_files), trainer)))

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """So does a fit stopped early (Ctrl-C, SIGTERM, an error): this process's list, without a gather
        that the other processes may never join. A test that fails has written the gathered list."""
        if trainer.state.fn == TrainerFn.FITTING:
            self._write_fit_bad_files(trainer, self.bad_files)

    def _write_fit_bad_files(self, trainer: L.Trainer, found: set[tuple[str, str]]) -> None:
        bad = found | set(getattr(getattr(trainer, "datamodule", None), "bad_files", None) or ())
        if bad and trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_bad_files(self.output_dir / "bad_files.txt", sorted(bad))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The logged test accuracy, precision, recall and F1 call a verdict at the report's threshold."""
        for metric in getattr(pl_module, "test_metrics", {}).values():
            if hasattr(metric, "threshold"):  # the curves (AUROC, AUPRC) have none
                metric.threshold = self.threshold

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []
        self._test_bad = set()
        self.summary = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._test_bad |= self._collect_bad(batch)
        if not outputs:
            return
        logits = outputs["logits"].float().cpu().tolist()
        labels = outputs["labels"].int().cpu().tolist()
        paths = outputs["paths"] or [f"#{batch_idx}:{i}" for i in range(len(labels))]
        self._rows.extend(zip(paths, labels, logits, strict=True))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = gather_lists(self._rows, trainer)
        datamodule = getattr(trainer, "datamodule", None)
        bad = set(gather_lists(sorted(self.bad_files), trainer)) | set(
            getattr(datamodule, "bad_files", None) or ()
        )
        index = getattr(datamodule, "index", None)
        test_bad = set(gather_lists(sorted(self._test_bad), trainer))
        test_bad |= set(index.skipped_by_split.get("test", [])) if index is not None else set()
        if not rows:  # the same on every rank (gathered): all of them stop
            if trainer.is_global_zero:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                write_bad_files(self.output_dir / "bad_files.txt", sorted(bad))
            raise UserError(
                f"No test image could be read: there is no report to write. The {len(test_bad)} unreadable "
                f"test file(s) are listed in {self.output_dir / 'bad_files.txt'}; replace them, or point "
                "data.root at the dataset."
            )
        if not trainer.is_global_zero:
            return
        paths, labels, logits = zip(*rows, strict=True)
        predictions = Predictions(list(paths), np.asarray(labels), np.asarray(logits))
        describe = getattr(pl_module, "describe", None)
        summary_of_data = getattr(datamodule, "summary", None)
        self.summary, figures = write_report(
            self.output_dir,
            predictions,
            threshold=self.threshold,
            model=describe() if callable(describe) else {"class": type(pl_module).__name__},
            data=summary_of_data() if callable(summary_of_data) else {},
            bad_files=sorted(bad),
            unreadable_in_test=len(test_bad),
            extra={"checkpoint": trainer.ckpt_path or getattr(pl_module, "checkpoint_path", None)},
            verdict_images=self.verdict_images,
            decision=self.decision or getattr(pl_module, "notes", {}).get("decision"),
        )
        self._to_tensorboard(trainer, figures)
        for fig in figures.values():
            plt.close(fig)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Print the report once the test progress bar is done, below it.

        Lightning ends a rich progress bar's live display at teardown, after this hook: what is printed
        before comes out above the bar (in a log file or a pipe, the finished bar came after "Report written
        to"). Its test bar is complete here, so it is ended now; ending it again at teardown does nothing.
        """
        if self.summary is None:  # not rank 0
            return
        bar = trainer.progress_bar_callback
        if isinstance(bar, RichProgressBar) and bar.progress is not None:
            bar.progress.stop()
        self._print(self.summary)

    def _to_tensorboard(self, trainer: L.Trainer, figures: dict[str, Any]) -> None:
        assert self.summary is not None
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for name, fig in figures.items():
                    logger.experiment.add_figure(f"report/{name}", fig, global_step=trainer.global_step)
                auroc = self.summary["metrics"]["auroc"]
                if not math.isnan(auroc):  # NaN: one class only (the report's notes say so)
                    logger.experiment.add_scalar("hp_metric", torch.tensor(auroc), trainer.global_step)
                logger.experiment.flush()

    def _print(self, summary: dict[str, Any]) -> None:
        counts = summary["counts"]
        # A title wraps at the table's width, some 50 columns here: the counts are a row, not in the title.
        table = Table(title=f"Test report, threshold {summary['threshold']:g}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        chosen = summary.get("metrics_at_chosen_threshold")
        if chosen:
            decision = summary["decision"]
            table.add_column(
                f"at {decision['threshold']:.4g}, T={decision.get('temperature') or 1:.3g}", justify="right"
            )
        images = f"{counts['images']} ({counts['real']} / {counts['fake']})"
        table.add_row("images (real / fake)", images, *([images] if chosen else []))
        for name, value in summary["metrics"].items():
            table.add_row(name, _shown(value), *([_shown(chosen.get(name))] if chosen else []))
        table.add_row("unreadable test files skipped", str(counts["unreadable_skipped"]))
        console = table_console()
        console.print(table)
        for note in summary["notes"] + summary.get("metric_notes", []):
            console.print(note, markup=False)
        console.print(f"Report written to [bold]{self.output_dir}[/bold]")
        record.info(
            "Test report: %s images (%s real, %s fake), threshold %g, %s unreadable skipped; metrics %s",
            *(counts[key] for key in ("images", "real", "fake")),
            summary["threshold"],
            counts["unreadable_skipped"],
            json.dumps(json_safe(summary["metrics"])),
        )
        for note in summary["notes"]:
            record.warning("%s", note)
