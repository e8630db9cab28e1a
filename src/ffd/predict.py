"""python -m ffd.predict input=PATH model=CKPT_OR_ONNX [threshold=0.5]

Real/Fake verdicts for an image, a folder, a glob or a list of paths, from a checkpoint (PyTorch) or an
exported ONNX file (onnxruntime), with the evaluation's decoding and resizing. Prints a table and writes
predictions.csv, predictions.json and bad_files.txt (absolute paths) into outputs/predict/<timestamp>/,
where predict.log records the run in one line.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ffd.hints import suggest_keys
from ffd.inference import predict
from ffd.runtime import exit_on_user_error, sigterm_stops_like_ctrl_c


def _register_configs() -> None:
    """Compose predict.yaml from the config store rather than the conf/ folder.

    ``model=FILE`` is this command's argument, but in conf/ ``model`` is also the training config group,
    and Hydra would read the override as a choice of that group. The store holds only what predict.yaml
    uses (paths, hydra), read from the same files, so the run folder and logging are the other tasks'.
    """
    conf = Path(__file__).resolve().parent / "conf"
    store = ConfigStore.instance()
    store.store(name="predict", node=OmegaConf.load(conf / "predict.yaml"))
    for group in ("paths", "hydra"):
        store.store(group=group, name="default", node=OmegaConf.load(conf / group / "default.yaml"))


_register_configs()


@suggest_keys("predict", config_dir=None)
@hydra.main(version_base="1.3", config_path=None, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    with sigterm_stops_like_ctrl_c():
        predict(
            cfg.input,
            cfg.model,
            cfg.output,
            threshold=cfg.threshold,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            device=cfg.device,
            max_rows=cfg.max_rows,
            overwrite=cfg.overwrite,
        )


if __name__ == "__main__":
    main()
