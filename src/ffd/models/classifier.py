"""DeepfakeClassifier: the one LightningModule for every ffd detector.

The network is described by plain data (``{"name": "densenet", ...}``) and built through
``ffd.models.create_net``, so a checkpoint carries everything needed to rebuild it and loads with
``torch.load(weights_only=True)``: no pickled code, no Hydra config needed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)

from ffd.errors import UserError
from ffd.models import create_net

# With one class in the targets torchmetrics warns and scores the curves 0 or 1; ffd logs them as NaN
# instead (_log_epoch_metrics), and the report says why. Seen in the sanity check of an unshuffled
# validation set, and in a test split whose other class was all unreadable.
warnings.filterwarnings("ignore", message="No (negative|positive) samples (found )?in target")


# The metrics that rank fakes above reals: they need both classes in the targets.
CURVE_METRICS = ("auroc", "auprc")


def _metrics(prefix: str) -> MetricCollection:
    # validate_args=False: the checks copy the targets' unique values to the host, a GPU sync every step;
    # the labels come from the dataset index and are always 0 or 1.
    metrics = {
        "accuracy": BinaryAccuracy,
        "precision": BinaryPrecision,
        "recall": BinaryRecall,
        "f1": BinaryF1Score,
        "auroc": BinaryAUROC,
        "auprc": BinaryAveragePrecision,
    }
    return MetricCollection({name: cls(validate_args=False) for name, cls in metrics.items()}, prefix=prefix)


# Devices with a fused AdamW kernel in torch >= 2.6.
FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def make_adamw(params: list[nn.Parameter], settings: Mapping[str, Any] | None) -> torch.optim.AdamW:
    """AdamW from ``model.optimizer`` (lr, weight_decay, betas, fused). Fused by default on CPUs and
    GPUs: one kernel per step instead of several per parameter, and no per-parameter step counter read
    back on the host. Measured on 2 CPU cores: the optimizer step 3-4x faster (DenseNet121 41 -> 10 ms)."""
    settings = dict(settings or {})
    fused = bool(params) and all(p.device.type in FUSED_ADAMW_DEVICES for p in params)
    return torch.optim.AdamW(
        params,
        lr=settings.get("lr", 1e-3),
        weight_decay=settings.get("weight_decay", 0.0),
        betas=tuple(settings.get("betas", (0.9, 0.999))),
        fused=settings.get("fused", fused or None),
    )


# model.scheduler settings of each schedule (besides `name`), with their defaults.
SCHEDULES = {"plateau": {"factor": 0.5, "patience": 2}, "cosine": {"warmup_epochs": 0, "min_lr_factor": 0.01}}


class CosineSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Per epoch: a linear warm-up, then a cosine decay to ``min_lr_factor`` of each group's first rate.

    Every parameter group follows it, also one that fine-tuning adds later at a fraction of the current
    rate (LambdaLR knows only the groups it was created with, and fails on the next step)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_epochs: int,
        warmup_epochs: int,
        min_lr_factor: float,
    ) -> None:
        self.total_epochs, self.warmup_epochs, self.min_lr_factor = total_epochs, warmup_epochs, min_lr_factor
        super().__init__(optimizer)

    def factor(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        progress = (epoch - self.warmup_epochs) / max(self.total_epochs - self.warmup_epochs, 1)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return self.min_lr_factor + (1.0 - self.min_lr_factor) * cosine

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume where the schedule was, over this run's horizon: a resumed fit with a larger
        trainer.max_epochs decays to its new end instead of staying at the old end's minimum."""
        total_epochs = self.total_epochs
        super().load_state_dict(state_dict)
        self.total_epochs = total_epochs
        # The optimizer came back with the rate of the old horizon (its floor, at its end), which the next
        # epoch would train at: the rate of this one, before that epoch starts.
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        for group in self.optimizer.param_groups:  # a new group's rate was set at the last epoch's factor
            group.setdefault("initial_lr", group["lr"] / self.factor(max(self.last_epoch - 1, 0)))
        return [group["initial_lr"] * self.factor(self.last_epoch) for group in self.optimizer.param_groups]


class PlateauSchedule(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """ReduceLROnPlateau that resumes with this run's settings: torch's load_state_dict brings back the
    checkpoint's ``factor`` and ``patience`` too, so a resumed fit given model.scheduler.patience=0 kept the
    old patience while the config and the hparams tab said 0. The progress (best score, bad epochs) is the
    checkpoint's."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        settings = {"factor": self.factor, "patience": self.patience}
        super().load_state_dict(state_dict)
        self.factor, self.patience = settings["factor"], settings["patience"]


def check_training_settings(optimizer: Mapping[str, Any] | None, scheduler: Mapping[str, Any] | None) -> None:
    """Refuse a schedule or learning rate that cannot work, naming the option, before the model is built."""
    lr = (optimizer or {}).get("lr", 1e-3)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or lr < 0:
        raise UserError(f"model.optimizer.lr={lr} must be a number, 0 or more (the reference uses 1e-3).")
    schedule = dict(scheduler or {})
    name = schedule.pop("name", None)
    if name in (None, "none"):
        return
    if name not in SCHEDULES:
        raise UserError(f"model.scheduler.name={name} is not one of: plateau, cosine, none.")
    unknown = set(schedule).difference(*SCHEDULES.values())
    if unknown:
        known = ", ".join(sorted(set().union(*SCHEDULES.values())))
        raise UserError(f"model.scheduler has unknown key(s) {', '.join(sorted(unknown))}; known: {known}.")


class DeepfakeClassifier(L.LightningModule):
    """Binary real (0) / fake (1) classifier over a network that returns one logit per image.

    Args:
        net: the network's description for ``create_net``, e.g. ``{"name": "vit", "image_size": 128}``.
        optimizer: AdamW settings (``lr``, ``weight_decay``, ``betas``).
        scheduler: ``{"name": "plateau", ...}`` (ReduceLROnPlateau on ``val/auroc``; it also scales the
            parameter groups that fine-tuning adds later), ``{"name": "cosine", "warmup_epochs": ...,
            "min_lr_factor": ...}`` (per-epoch cosine with linear warm-up) or ``None``.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_training_settings(optimizer, scheduler)  # before fitting, not in configure_optimizers
        self.save_hyperparameters(logger=False)  # the entry points log the whole composed config
        self.net = create_net(**net)
        self.criterion = nn.BCEWithLogitsLoss()
        self.train_metrics = _metrics("train/")
        self.val_metrics = _metrics("val/")
        self.test_metrics = _metrics("test/")
        # Validation and test losses, averaged over every image of every process at the epoch end. Not
        # Lightning's sync_dist mean of a logged value: that divides by the processes' image counts
        # averaged in an integer (11 images on 2 processes: the loss sum over 5, not 5.5).
        # nan_strategy="disable": the NaN check reads a value back on the host, a GPU sync every step; a NaN
        # loss is logged as NaN, as Lightning would.
        self.eval_losses = nn.ModuleDict(
            {stage: MeanMetric(nan_strategy="disable") for stage in ("val", "test")}
        )
        self.checkpoint_path: str | None = None  # the file it was loaded from, if any (for reports)
        self.notes: dict[str, Any] = {}  # the checkpoint's ffd notes (card, decision): ffd.models.notes

    @property
    def net_name(self) -> str:
        return str(self.hparams["net"]["name"])

    @property
    def image_size(self) -> int | None:
        return self.hparams["net"].get("image_size")

    def forward(self, images: Tensor) -> Tensor:
        """RGB images, uint8 or float in 0..255, (B, 3, H, W) -> logits (B,)."""
        return self.net(images)

    def _step(self, batch: Mapping[str, Any], stage: str, metrics: MetricCollection) -> dict[str, Any] | None:
        # A distributed sampler's trailing repeats (ffd.data.dataset.MarkedPaddingSampler) are dropped:
        # the split's every image counts once. Slicing by a Python int waits for nothing.
        scored = batch["image"].shape[0] - batch.get("repeats", 0)
        images, labels = batch["image"][:scored], batch["label"][:scored]
        if scored == 0:  # every file of this batch was unreadable (the report lists them), or a repeat
            if stage != "train" or not _distributed():
                return None
            # Under DDP each process must take part in the gradient all-reduce (Lightning refuses a
            # skipped training step there): a zero loss over every trainable parameter, weighing nothing
            # in the epoch's mean.
            zero = sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
            self._log_loss(stage, zero, batch_size=0)
            return {"loss": zero}
        logits = self(images)
        loss = self.criterion(logits, labels)
        self._log_loss(stage, loss, batch_size=labels.shape[0])
        if stage == "train" and hasattr(self.net, "regularization_loss"):
            loss = loss + self.net.regularization_loss()
        # Probabilities, not logits: torchmetrics takes a batch whose values all lie in [0, 1] for
        # probabilities already, and would score a batch of small logits unsquashed.
        # In float32: under bf16-mixed the logits are bf16, whose probabilities would be coarsely rounded.
        metrics.update(torch.sigmoid(logits.detach().float()), labels.int())
        paths = batch.get("path")
        return {"loss": loss, "logits": logits.detach(), "labels": labels, "paths": paths and paths[:scored]}

    def _log_loss(self, stage: str, loss: Tensor, batch_size: int) -> None:
        if stage != "train":
            # One value per image (a view): "disable" ignores the weight argument.
            self.eval_losses[stage].update(loss.detach().expand(batch_size))
            return
        # The training loss is each process's own: an all-reduce every step would stall the GPUs. Not on
        # the progress bar: Lightning reads a prog_bar metric logged on step after every step, a GPU sync
        # each time; ffd.callbacks.progress.ProgressBar shows it every log_every_n_steps instead.
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=batch_size)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return self._step(batch, "test", self.test_metrics)

    def _log_epoch_metrics(
        self, metrics: MetricCollection, loss: MeanMetric | None = None
    ) -> dict[str, Tensor] | None:
        """Log the epoch's metrics (and loss, for validation and test), then reset them; return the
        metrics, or None when nothing was measured.

        Computed here once per epoch, not passed to ``self.log_dict`` at every step: each such call goes
        through Lightning's result collection and moves the Metric to the device: 0.5-1 ms of host time per
        metric per step (benchmarks/epoch_metrics.py). ``compute`` gathers every process's predictions;
        ``sync_dist`` then averages equal values and keeps Lightning from warning about unsynchronised
        epoch metrics.
        """
        updated = any(metric.update_called for metric in metrics.values())  # not if every file was unreadable
        if _distributed():  # compute() gathers from every process: all of them take part, or none
            updated = self.trainer.strategy.reduce_boolean_decision(updated, all=False)
        scores = metrics.compute() if updated else None
        if scores is not None:
            for name in self._undefined_metrics(metrics):
                scores[metrics.prefix + name] = torch.full_like(scores[metrics.prefix + name], math.nan)
            self.log_dict(scores, sync_dist=True)
            if loss is not None:
                # On the progress bar for validation (a value read once per epoch).
                self.log(
                    f"{metrics.prefix}loss",
                    loss.compute(),
                    sync_dist=True,
                    prog_bar=loss is self.eval_losses["val"],
                )
        metrics.reset()
        if loss is not None:
            loss.reset()
        return scores

    def _undefined_metrics(self, metrics: MetricCollection) -> list[str]:
        """The epoch's metrics that mean nothing, logged as NaN as the report shows them null: AUROC and
        AUPRC unless the targets (on every process) held both classes, and precision, recall and F1 where
        their ratio is 0/0 (torchmetrics says 0). Read from the verdict metrics' confusion counts, once
        per epoch."""
        verdicts = metrics.__getitem__("accuracy", copy_state=False)
        counts = torch.stack([verdicts.tp.sum(), verdicts.fp.sum(), verdicts.fn.sum(), verdicts.tn.sum()])
        if _distributed():
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        tp, fp, fn, tn = counts.tolist()
        denominators = {"precision": tp + fp, "recall": tp + fn, "f1": 2 * tp + fp + fn}
        undefined = [name for name, denominator in denominators.items() if denominator == 0]
        both_classes = tp + fn > 0 and tn + fp > 0
        return undefined if both_classes else [*undefined, *CURVE_METRICS]

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics(self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        scores = self._log_epoch_metrics(self.val_metrics, self.eval_losses["val"])
        plateau = self._plateau()
        if plateau and scores and self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            plateau.step(scores["val/auroc"])

    def _plateau(self) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
        """The plateau schedule, when it is the one. It steps on ``val/auroc`` here, at the end of
        validation, before the checkpoints of the epoch are written; Lightning would step it after them,
        and a fit resumed from such a checkpoint would never count that epoch's score."""
        if self._trainer is None:
            return None
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        plateaus = [s for s in schedulers if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau)]
        return plateaus[0] if plateaus else None

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):  # stepped above
            scheduler.step()

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics(self.test_metrics, self.eval_losses["test"])

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        return torch.sigmoid(self(batch["image"]).float())

    def configure_optimizers(self) -> Any:
        settings = self.hparams.get("optimizer")
        # Only what is trainable now: fine-tuning callbacks add the frozen layers later as their own group.
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = make_adamw(params, settings)
        # Named, so that TensorBoard keeps one learning-rate curve per group (lr-AdamW/from_start) when
        # fine-tuning adds its group (lr-AdamW/unfrozen), instead of renaming the first one pg1.
        optimizer.param_groups[0]["name"] = "from_start"
        schedule = dict(self.hparams.get("scheduler") or {})
        name = schedule.pop("name", None)
        if name in (None, "none"):
            return optimizer
        # Keys of the other schedule (model/densenet.yaml's plateau settings under name=cosine) are unused.
        settings = {key: schedule.get(key, default) for key, default in SCHEDULES[name].items()}
        if name == "plateau":
            scheduler = PlateauSchedule(optimizer, mode="max", **settings)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/auroc"}}
        total = max(int(self.trainer.max_epochs or 1), 1)
        return {"optimizer": optimizer, "lr_scheduler": CosineSchedule(optimizer, total, **settings)}

    def describe(self) -> dict[str, Any]:
        """What the report says about the model."""
        return {
            "name": self.net_name,
            "net": dict(self.hparams["net"]),
            "parameters": sum(p.numel() for p in self.parameters()),
            "image_size": self.image_size,
        }
