"""checkpoints/last.ckpt, the end of every epoch to resume from, without a second copy of the best one.

A DenseNet121 checkpoint is 87 MB. When an epoch is the best so far, ``callbacks.model_checkpoint`` has
just written it as ``epochNNN-auroc….ckpt``, and a second full file named last.ckpt would hold the same
bytes; last.ckpt is then a relative symbolic link to it (which survives moving the run folder). Any other
epoch writes last.ckpt as a file, after removing the link, so that the best file is never written through it.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LatestCheckpoint(ModelCheckpoint):
    """A ``monitor=None`` ModelCheckpoint whose file links to the best checkpoint written at the same step."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if trainer.is_global_zero and os.path.lexists(filepath):
            os.remove(filepath)  # a link left from an earlier epoch would be written through
        best = self._best_written_now(trainer, filepath)
        if best is None:
            super()._save_checkpoint(trainer, filepath)
            return
        if trainer.is_global_zero:
            os.symlink(os.path.relpath(best, os.path.dirname(filepath)), filepath)
        trainer.strategy.barrier("LatestCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    @staticmethod
    def _best_written_now(trainer: L.Trainer, filepath: str) -> str | None:
        """The best-model file another checkpoint callback wrote at this global step, if any."""
        for callback in trainer.checkpoint_callbacks:
            if (
                isinstance(callback, ModelCheckpoint)
                and callback.monitor
                and callback._last_global_step_saved == trainer.global_step
                and callback.best_model_path
                and os.path.isfile(callback.best_model_path)
                and os.path.abspath(callback.best_model_path) != os.path.abspath(filepath)
            ):
                return callback.best_model_path
        return None
