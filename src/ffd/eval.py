"""python -m ffd.eval ckpt_path=PATH [data=kaggle data.root=PATH | data.roots=[A,B,C]] [robustness=default]

Test a checkpoint written by ffd.train and write the report into outputs/eval/<timestamp>/. With
robustness=default the test split is then scored again under degraded photos (ffd.trust.robustness); an
.onnx written by ffd.export is scored that way alone, without the Lightning test report. data.roots tests
the checkpoint on each set in turn and compares them in one table (ffd.trust.cross_set).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ffd.errors import UserError
from ffd.hints import suggest_keys
from ffd.models.checkpoint import load_for_run
from ffd.models.classifier import DeepfakeClassifier
from ffd.runtime import exit_on_user_error, instantiate_all, make_trainer, needs_extra
from ffd.trust.cross_set import cross_set_roots, evaluate_sets
from ffd.trust.robustness import measure_robustness, robustness_plan


def _explainer(cfg: DictConfig) -> Callable[[DeepfakeClassifier], object] | None:
    """explain=true, set up before the test: a wrong option or a missing extra stops the run at once."""
    if cfg.get("explain", False) is False:
        return None
    try:
        from ffd.faces.explain_report import Explainer
    except ImportError as error:  # grad-cam is the 'explain' extra, MediaPipe a core dependency
        extra = None if (error.name or "").startswith("mediapipe") else "explain"
        raise UserError(f"explain=true {needs_extra(error.name or 'grad-cam', extra)}") from error
    return Explainer.for_run(cfg)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test ``cfg.ckpt_path`` on ``cfg.data``'s test split, then under ``cfg.robustness``'s perturbations;
    return the test metrics and each robustness curve's mean AUROC. With several ``data.roots``: each set's
    test metrics, as ``<set>/test/<metric>``."""
    roots = cross_set_roots(cfg)  # None for one set, which is then data.root
    plan = robustness_plan(
        cfg.get("robustness"), OmegaConf.select(cfg, "callbacks.report.threshold", default=0.5)
    )
    explain = _explainer(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if str(cfg.get("ckpt_path") or "").lower().endswith(".onnx"):
        if plan is None:
            raise UserError(
                f"ckpt_path={cfg.ckpt_path} is an exported ONNX model: the test report is written from the "
                ".ckpt it was exported from. To score the ONNX file itself on the test split, add "
                "robustness=default (its clean pass is the plain test score; conf/robustness/default.yaml)."
            )
        if not Path(cfg.ckpt_path).is_file():
            raise UserError(f"ckpt_path={cfg.ckpt_path} does not exist: pass an .onnx written by ffd.export.")
        return measure_robustness(cfg, plan, instantiate_all(cfg.get("logger"), "logger"))
    model = load_for_run(cfg)
    if roots is not None:
        return evaluate_sets(cfg, roots, model)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.one_class_test = True  # e.g. a folder of another generator's fakes: how many are caught
    loggers = instantiate_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = make_trainer(cfg, loggers, {"model": model.describe()})
    trainer.test(model, datamodule=datamodule, verbose=False)  # the report prints its table
    if explain is not None and trainer.is_global_zero:
        explain(model)  # region_shares.* and explained_fakes.png beside the report
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    return metrics | (measure_robustness(cfg, plan, loggers, datamodule) if plan else {})


@suggest_keys("eval")
@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return evaluate(cfg).get("test/auroc")


if __name__ == "__main__":
    main()
