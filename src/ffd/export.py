"""python -m ffd.export ckpt_path=CKPT [export.precisions=[fp32,fp16,int8]] [data=synthetic | data.root=PATH]

Export a checkpoint written by ffd.train to ONNX (fp32, fp16, int8) and prove the files: parity with the
checkpoint, verdicts changed, accuracy, AUROC, AUPRC, size and latency in
outputs/export/<timestamp>/export_report.json, and one line per file in export.log. A
file outside its limit (export.limits) fails the run with exit code 1, after the report is written.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ffd.hints import suggest_keys
from ffd.runtime import exit_on_user_error, sigterm_stops_like_ctrl_c


@suggest_keys("export")
@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    # Imported here, where a missing `export` extra is caught and named.
    from ffd.deploy.pipeline import run

    with sigterm_stops_like_ctrl_c():
        run(cfg)


if __name__ == "__main__":
    main()
