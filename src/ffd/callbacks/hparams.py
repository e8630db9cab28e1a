"""The run's composed config in every logger's hparams view (TensorBoard's HPARAMS tab, hparams.yaml)."""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

CONFIG_KEYS = ("model", "data", "trainer", "callbacks", "seed", "ckpt_path")


class LogConfig(L.Callback):
    """Logs the config (model, data, trainer, callbacks, seed, checkpoint) and `extra` once, after the data
    module's setup: a run that stops on its data (an empty split, a wrong layout) leaves no TensorBoard run
    holding nothing but a placeholder hp_metric."""

    def __init__(self, cfg: DictConfig, extra: dict[str, Any] | None = None) -> None:
        container = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(container, dict)
        self.params = {key: container[key] for key in CONFIG_KEYS if key in container} | (extra or {})
        self._logged = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._logged:  # fit then test: logging again would reset hp_metric
            return
        for logger in trainer.loggers:
            logger.log_hyperparams(self.params)
        self._logged = True
