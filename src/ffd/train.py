"""python -m ffd.train [model=densenet|vit] [experiment=quickstart] [key=value ...]

Fit a detector, then test its best checkpoint and write the report into outputs/train/<timestamp>/.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig

from ffd.callbacks.report import ReportWriter, gather_lists
from ffd.errors import UserError
from ffd.hints import suggest_keys
from ffd.models.card import training_card
from ffd.models.checkpoint import read_checkpoint
from ffd.models.notes import update_notes
from ffd.options import flag_problem
from ffd.runtime import exit_on_user_error, instantiate_all, make_trainer
from ffd.trust import decision as trust_decision
from ffd.trust.audit import warn_at_training_start

log = logging.getLogger("ffd.train")

# The score of the checkpoint that is tested: what a sweep ranks runs by.
BEST_VAL_AUROC = "val/auroc_best"


def continue_checkpoints(cfg: DictConfig) -> None:
    """A resumed fit writes its checkpoints next to the one it resumes from, the interrupted run's folder.

    Lightning restores the best score so far only into a checkpoint callback with the same folder; in a
    new one, the first epoch after resuming would count as the best and be tested, however poor."""
    read_checkpoint(cfg.ckpt_path, expected_net=cfg.model.net.name)  # a clear error for a wrong path or file
    folder = str(Path(cfg.ckpt_path).expanduser().resolve().parent)
    for name, callback in (cfg.get("callbacks") or {}).items():
        if callback and str(callback.get("_target_", "")).endswith(("ModelCheckpoint", "LatestCheckpoint")):
            cfg.callbacks[name].dirpath = folder
    log.info("Resuming from %s: checkpoints continue in %s.", cfg.ckpt_path, folder)


def latest_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest end-of-epoch checkpoint (callbacks.latest_checkpoint's last.ckpt), if one was written."""
    paths = [
        Path(c.dirpath or "", f"{c.filename}.ckpt") for c in trainer.checkpoint_callbacks if not c.monitor
    ]
    return next((str(path) for path in paths if path.is_file()), None)


def refuse_frozen_random_backbone(cfg: DictConfig) -> None:
    """Fine-tuning freezes a pretrained backbone for its first epochs, then trains only its top quarter,
    BatchNorm frozen throughout: on a backbone of random weights the head learns from random features."""
    net = cfg.model.get("net") or {}
    if (
        (cfg.get("callbacks") or {}).get("finetune")
        and net.get("pretrained") is False
        and not net.get("weights")
    ):
        raise UserError(
            "model.net.pretrained=false starts the backbone from random weights, but callbacks.finetune "
            "would freeze it (BatchNorm included) for the first epochs and then train only its top layers, "
            "so the head would learn from random features. Add callbacks.finetune=null to train the whole "
            "network from the start (as experiment=quickstart does), or give ImageNet weights with "
            "model.net.weights=PATH."
        )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint; return the final metrics (validation and test) as floats."""
    if problem := flag_problem(cfg.get("test", False), "test"):
        raise UserError(f"{problem}.")
    refuse_frozen_random_backbone(cfg)
    choice = cfg.get("threshold") or {}
    calibration = str(cfg.get("calibration") or "none")
    trust_decision.check_options(
        str(choice.get("policy", "fixed")), choice.get("value", 0.5), choice.get("fpr", 0.01), calibration
    )
    L.seed_everything(cfg.seed, workers=True)
    if cfg.get("ckpt_path"):
        continue_checkpoints(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    if cfg.get("test"):
        datamodule.splits_for_fit = ("train", "val", "test")
    model = instantiate(cfg.model, _convert_="all")
    if model.image_size and model.image_size != datamodule.image_size:
        raise UserError(
            f"model.net.image_size={model.image_size} but data.image_size={datamodule.image_size}: the model "
            "is built for (and records) the first, the data loaders deliver the second. Drop the "
            "model.net.image_size override (it follows data.image_size) or set data.image_size to match."
        )
    if cfg.get("audit_at_start", True):  # do the files alone tell real from fake? (docs/audit.md)
        warn_at_training_start(datamodule, seed=cfg.seed)
    loggers = instantiate_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = make_trainer(
        cfg, loggers, {"model/parameters": sum(p.numel() for p in model.parameters())}
    )

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except BaseException:
        if trainer.interrupted and (last := latest_checkpoint(trainer)):
            log.error("Fitting stopped early. Resume it with ckpt_path=%s", last)
        raise
    metrics: dict[str, Any] = dict(trainer.callback_metrics)
    selector = next((c for c in trainer.checkpoint_callbacks if c.monitor == "val/auroc"), None)
    if selector is not None and selector.best_model_score is not None:
        metrics[BEST_VAL_AUROC] = selector.best_model_score
    if cfg.get("test"):
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
        if not best:
            log.warning("No best checkpoint was saved; testing the weights as they are after fitting.")
        else:
            store_decision(trainer, model, datamodule, best, choice, calibration)
        trainer.test(
            model, datamodule=datamodule, ckpt_path=best or None, verbose=False
        )  # the report prints its table
        metrics.update(trainer.callback_metrics)
    metrics = {name: float(value) for name, value in metrics.items()}
    write_card(trainer, training_card(datamodule, model.net_name, metrics))
    return metrics


def store_decision(
    trainer: L.Trainer, model: Any, datamodule: Any, best: str, choice: Any, calibration: str
) -> None:
    """Choose the threshold (and temperature) on the validation logits of the checkpoint that is tested,
    never on test, and store them in every checkpoint file; the test report then shows both."""
    collector = trust_decision.ValidationLogits()
    trainer.callbacks.append(collector)
    loggers, trainer.loggers = trainer.loggers, []  # a re-run, not an epoch: one row per epoch
    try:
        trainer.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
    finally:
        trainer.callbacks.remove(collector)
        trainer.loggers = loggers
    # every process's share of the validation split (under DDP each saw its own)
    labels, logits = gather_lists(collector.labels, trainer), gather_lists(collector.logits, trainer)
    notes = trust_decision.choose(
        np.asarray(labels),
        np.asarray(logits),
        str(choice.get("policy", "fixed")),
        choice.get("value", 0.5),
        choice.get("fpr", 0.01),
        calibration,
    )
    log.info("Decision chosen on validation: %s", notes)
    for callback in trainer.callbacks:
        if isinstance(callback, ReportWriter):
            callback.decision = notes
    if trainer.global_rank == 0:
        folders = {Path(c.dirpath) for c in trainer.checkpoint_callbacks if c.dirpath}
        for file in sorted({file.resolve() for folder in folders for file in folder.glob("*.ckpt")}):
            update_notes(file, decision=notes)


def write_card(trainer: L.Trainer, card: dict[str, Any]) -> None:
    """Put the model card into every checkpoint file the fit wrote (the best and last.ckpt)."""
    if trainer.global_rank != 0:
        return
    folders = {Path(c.dirpath) for c in trainer.checkpoint_callbacks if c.dirpath}
    for file in sorted({file.resolve() for folder in folders for file in folder.glob("*.ckpt")}):
        update_notes(file, card=card)


@suggest_keys("train")
@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the metric a sweeper optimises: the best epoch's validation AUROC (the
    epoch that is tested), never the test split's, which would leak the test set into the choice."""
    metrics = train(cfg)
    return metrics.get(BEST_VAL_AUROC, metrics.get("val/auroc"))


if __name__ == "__main__":
    main()
