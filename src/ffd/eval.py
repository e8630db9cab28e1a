"""python -m ffd.eval ckpt_path=PATH [data=kaggle data.root=PATH]

Test a checkpoint written by ffd.train and write the report into outputs/eval/<timestamp>/.
"""

from __future__ import annotations

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from ffd.hints import suggest_keys
from ffd.models.classifier import load_for_run
from ffd.runtime import exit_on_user_error, instantiate_all, make_trainer


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.data``'s test split; return the test metrics."""
    L.seed_everything(cfg.seed, workers=True)
    model = load_for_run(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.one_class_test = True  # e.g. a folder of another generator's fakes: how many are caught
    loggers = instantiate_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = make_trainer(cfg, loggers, {"model": model.describe()})
    trainer.test(model, datamodule=datamodule, verbose=False)  # the report prints its table
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


@suggest_keys("eval")
@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("test/auroc")


if __name__ == "__main__":
    main()
