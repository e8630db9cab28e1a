"""python -m ffd.align input=PHOTOS output=DIR [split=[0.8,0.1,0.1]] [size=256]

Aligned face crops of a user's real/ and fake/ photo folders, in the Kaggle layout that
``python -m ffd.train data=kaggle data.root=DIR`` reads; DIR/manifest.csv and DIR/bad_files.txt beside them.
Resumable: a rerun into the same DIR aligns only what is not there yet. The exit code is non-zero only if
DIR holds no crop.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ffd.faces.dataset import run
from ffd.hints import suggest_keys
from ffd.runtime import exit_on_user_error, sigterm_stops_like_ctrl_c


@suggest_keys("align")
@hydra.main(version_base="1.3", config_path="conf", config_name="align")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    with sigterm_stops_like_ctrl_c():
        summary = run(cfg)
    if not summary.rows:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
