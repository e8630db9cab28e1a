"""python -m ffd.predict input=PATH model=CKPT_OR_ONNX [face=auto|align|none] [annotate=true] [explain=true]

Real/Fake verdicts per face (found and aligned as the training crops were) or per image, for an image, a
folder, a glob or a list of paths, from a checkpoint (PyTorch) or an exported ONNX file (onnxruntime).
Prints a table and writes predictions.csv, predictions.json and bad_files.txt (absolute paths) into
outputs/predict/<timestamp>/, where predict.log records the run in one line.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ffd.faces.align import FINDER_OPTIONS, FaceFinder
from ffd.faces.judge import FACE_MODES
from ffd.hints import suggest_keys
from ffd.inference import predict
from ffd.runtime import exit_on_user_error, sigterm_stops_like_ctrl_c
from ffd.segmentation.pipeline import model_file


def _register_configs() -> None:
    """Compose predict.yaml from the config store rather than the conf/ folder.

    ``model=FILE`` is this command's argument, but in conf/ ``model`` is also the training config group,
    and Hydra would read the override as a choice of that group. The store holds only what predict.yaml
    uses (paths, hydra, model_files, face), read from the same files, so the run folder and logging are the
    other tasks'.
    """
    conf = Path(__file__).resolve().parent / "conf"
    store = ConfigStore.instance()
    store.store(name="predict", node=OmegaConf.load(conf / "predict.yaml"))
    for group in ("paths", "hydra", "model_files"):
        store.store(group=group, name="default", node=OmegaConf.load(conf / group / "default.yaml"))
    for option in FACE_MODES:
        store.store(group="face", name=option, node=OmegaConf.load(conf / "face" / f"{option}.yaml"))


_register_configs()


@suggest_keys("predict", config_dir=None)
@hydra.main(version_base="1.3", config_path=None, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    finder = None
    if cfg.face.mode != "none":
        landmarker = model_file(cfg, "face_landmarker.task")  # before any work: a missing file is one error
        options = {key: cfg.face[key] for key in FINDER_OPTIONS}
        finder = partial(FaceFinder, landmarker, **options)
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
            face=cfg.face.mode,
            fallback=cfg.face.fallback,
            finder=finder,
            annotate=cfg.annotate,
            explain=cfg.explain,
        )


if __name__ == "__main__":
    main()
