"""python -m ffd.eval ckpt_path=PATH [data=kaggle data.root=PATH]

Test a checkpoint written by ffd.train and write the report into outputs/eval/<timestamp>/.
"""

from __future__ import annotations

import logging

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from ffd.models.classifier import CheckpointError, load_classifier
from ffd.runtime import exit_on_user_error, instantiate_all, log_config

log = logging.getLogger("ffd.eval")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.data``'s test split; return the test metrics."""
    if not cfg.get("ckpt_path"):
        raise CheckpointError("No checkpoint given: pass ckpt_path=PATH to a .ckpt written by ffd.train.")
    L.seed_everything(cfg.seed, workers=True)
    model = load_classifier(cfg.ckpt_path)
    if model.image_size and cfg.data.get("image_size") != model.image_size:
        log.info(
            "data.image_size set to %s, the size the checkpoint's model was trained at.", model.image_size
        )
        with open_dict(cfg):
            cfg.data.image_size = model.image_size
    datamodule = instantiate(cfg.data, _convert_="all")
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=loggers
    )
    log_config(loggers, cfg, {"model": model.describe()})
    trainer.test(model, datamodule=datamodule)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("test/auroc")


if __name__ == "__main__":
    main()
