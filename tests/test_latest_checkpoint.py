"""checkpoints/last.ckpt links to the best file when its epoch is the best, and is a file otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from ffd.callbacks.checkpoint import LatestCheckpoint

SCORES = [0.5, 0.7, 0.6, 0.8]  # best, best, worse, best


class ScoredModel(BoringModel):
    def on_validation_epoch_end(self) -> None:
        self.log("val/auroc", SCORES[self.current_epoch])


class LastState(Callback):
    """What last.ckpt was after each epoch (seen when the next starts, as checkpoints are saved last): the
    file it links to, and the epoch stored in it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.seen = folder, []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch:
            self.record()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record()

    def record(self) -> None:
        last = self.folder / "last.ckpt"
        stored = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
        self.seen.append((os.readlink(last) if last.is_symlink() else None, stored))


def test_last_links_to_the_best_and_never_writes_through_the_link(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    best = ModelCheckpoint(dirpath=folder, filename="{epoch:03d}", monitor="val/auroc", mode="max")
    latest = LatestCheckpoint(dirpath=folder, filename="last", monitor=None, enable_version_counter=False)
    state = LastState(folder)
    trainer = L.Trainer(
        max_epochs=len(SCORES),
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[best, latest, state],  # Lightning runs checkpoint callbacks last, in this order
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(ScoredModel())
    assert state.seen == [("epoch=000.ckpt", 0), ("epoch=001.ckpt", 1), (None, 2), ("epoch=003.ckpt", 3)]
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=003.ckpt", "last.ckpt"]
    assert (folder / "last.ckpt").resolve() == (folder / "epoch=003.ckpt").resolve()
    # epoch 2 wrote last.ckpt as a file after epoch 1's link: the best file of then kept its own epoch
    assert torch.load(folder / "epoch=003.ckpt", map_location="cpu", weights_only=True)["epoch"] == 3
