"""python -m ffd.audit data.root=PATH | data=synthetic [audit.max_images_per_class=N|null]

Check whether the files alone tell real from fake (ffd.trust.audit): print the table, write audit.json into
outputs/audit/<timestamp>/.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console

from ffd.data.index import SPLITS
from ffd.errors import UserError
from ffd.hints import suggest_keys
from ffd.options import count_problem, list_option
from ffd.report import json_safe
from ffd.runtime import exit_on_user_error
from ffd.trust.audit import audit_index, audit_table, index_for_audit

log = logging.getLogger("ffd.audit")
JSON_FILE = "audit.json"


def audit(cfg: DictConfig) -> dict:
    """Audit ``cfg.data``'s splits and write audit.json; return what it holds."""
    options = cfg.audit
    per_class = options.get("max_images_per_class")
    problems = [] if per_class is None else [count_problem(per_class, "audit.max_images_per_class")]
    warn_above = options.get("warn_above")
    if isinstance(warn_above, bool) or not isinstance(warn_above, int | float) or not 0.5 <= warn_above < 1:
        problems.append(f"audit.warn_above={warn_above} must be a number from 0.5 (no separation) up to 1")
    if problems := [problem for problem in problems if problem]:
        raise UserError("; ".join(problems) + ".")
    splits = list_option(cfg, "audit.splits", SPLITS)
    datamodule = instantiate(cfg.data, _convert_="all")  # refuses a data.root that is not a folder
    result = audit_index(index_for_audit(datamodule), splits, per_class, cfg.seed, float(warn_above))
    Console().print(audit_table(result))
    for line in result["warnings"]:
        log.warning(line)
    path = Path(cfg.paths.output_dir) / JSON_FILE
    path.write_text(json.dumps(json_safe(result), indent=2))
    log.info("Audit of %d split(s) written to %s", len(result["splits"]), path)
    return result


@suggest_keys("audit")
@hydra.main(version_base="1.3", config_path="conf", config_name="audit")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the highest AUROC of any property in any split (None if none)."""
    scores = [
        row["auroc"]
        for split in audit(cfg)["splits"].values()
        for row in split["properties"].values()
        if row["auroc"] is not None
    ]
    return max(scores, default=None)


if __name__ == "__main__":
    main()
