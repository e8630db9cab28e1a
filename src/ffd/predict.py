"""python -m ffd.predict input=PATH model=CKPT_OR_ONNX [face=auto|align|none] [annotate=true] [explain=true]

Real/Fake verdicts per face (found and aligned as the training crops were) or per image, for an image, a
folder, a glob or a list of paths, from a checkpoint (PyTorch) or an exported ONNX file (onnxruntime).
Prints a table and writes predictions.csv, predictions.json and bad_files.txt (absolute paths) into
outputs/predict/<timestamp>/, where predict.log records the run in one line.
"""

from __future__ import annotations

from functools import partial

import hydra
from omegaconf import DictConfig

from ffd.faces.align import FINDER_OPTIONS, FaceFinder
from ffd.faces.judge import FACE_MODES
from ffd.hints import suggest_keys
from ffd.inference import predict
from ffd.runtime import exit_on_user_error, sigterm_stops_like_ctrl_c, store_task_config
from ffd.segmentation.pipeline import model_file

store_task_config("predict", FACE_MODES)


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
