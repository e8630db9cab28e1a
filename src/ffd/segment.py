"""python -m ffd.segment input=PATH [backend=landmarks|parsing|regions] [output=DIR]

Annotate the faces in an image, a folder or a glob: <stem>.png and <stem>.json per image (and the label map
<stem>_labels.png for regions and parsing), summary.json, a summary table and a line in segment.log. The
exit code is non-zero only if no image could be processed.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ffd.hints import suggest_keys
from ffd.runtime import exit_on_user_error, sigterm_stops_like_ctrl_c


@suggest_keys("segment")
@hydra.main(version_base="1.3", config_path="conf", config_name="segment")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    # Imported here, where a missing `segment` extra is caught and named.
    from ffd.segmentation.pipeline import run

    with sigterm_stops_like_ctrl_c():
        summary = run(cfg)
    if summary.processed == 0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
