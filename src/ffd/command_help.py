"""``python -m ffd.<command> --help``: the command's usage and only the config groups it composes.

The commands share one conf/ folder, and Hydra's help lists every group in it: ``ffd.segment --help``
offered ``model: densenet, vit`` and the trainers, none of which segment reads. conf/hydra/default.yaml
builds each command's help from these two (``${ffd.usage:...}``, ``${ffd.config_groups:...}``) instead.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parent / "conf"


def usage(task: str) -> str:
    """The comment at the top of conf/<task>.yaml: how to call the command and what it writes."""
    lines = []
    for line in (CONF / f"{task}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.removeprefix("#").removeprefix(" "))
    return "\n".join(lines)


def config_groups(task: str) -> str:
    """One line per group in conf/<task>.yaml's defaults list (Hydra's own left out): its options."""
    defaults = OmegaConf.load(CONF / f"{task}.yaml").get("defaults", [])
    lines = []
    for entry in defaults:
        if not isinstance(entry, DictConfig):  # _self_
            continue
        group = next(iter(entry)).removeprefix("optional ").split("@")[0]
        if group != "hydra":
            options = sorted(path.stem for path in (CONF / group).glob("*.yaml"))
            lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)
