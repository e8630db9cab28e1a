"""Why an option's value cannot be used, worded for the user: counts, switches, thresholds, devices, list
options as people type them, and a file option given a folder or a file that does not load. Every module
may check its options with these; this module imports only ffd.errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ffd.errors import UserError


def device_problem(device: str) -> str | None:
    """Why ``device=`` (auto, cpu, cuda, cuda:N) cannot be used here, or None."""
    import torch

    if device in ("auto", "cpu"):
        return None
    try:
        kind = torch.device(device).type
    except RuntimeError:
        return f"device={device} is not a device; use auto, cpu, cuda or cuda:N"
    if kind != "cuda":
        return f"device={device}: use auto, cpu, cuda or cuda:N"
    if not torch.cuda.is_available():
        return f"device={device}, but PyTorch sees no CUDA GPU here; use device=auto or device=cpu"
    return None


def load_failure(error: Exception) -> str:
    """One line on why a model file did not load, for a user's error message.

    Never PyTorch's own weights_only text, which advises loading with weights_only=False: ffd never runs
    pickled code from a user's file."""
    chain = [error]  # timm re-raises PyTorch's refusal as a RuntimeError with the same advice
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    refusals = [str(e) for e in chain if "weights_only" in str(e)]
    if refusals:
        if any("Unsupported global" in text or "allowlisted" in text for text in refusals):
            return "it holds pickled objects beyond tensors, and ffd never runs pickled code"
        return "not a PyTorch file of tensors"
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    first = re.sub(r"\x1b\[[0-9;]*m", "", first)  # colour codes
    return f"{type(error).__name__}: {first[:200] if first else 'empty or truncated'}"


def as_typed(value: Any) -> str:
    """``value`` as it is typed on the command line: true, false and null, not Python's True, False, None."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def count_problem(value: Any, key: str, minimum: int = 1) -> str | None:
    """Why ``value`` cannot be the count option ``key`` (a whole number >= ``minimum``), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"{key}={as_typed(value)} must be a whole number, at least {minimum}"
    return None


def flag_problem(value: Any, key: str) -> str | None:
    """Why ``value`` cannot be the switch ``key``, or None. Hydra reads ``key=no`` or ``key=off`` as a word,
    which Python takes as true: ``overwrite=no`` replaced earlier results."""
    if not isinstance(value, bool):
        return f"{key}={as_typed(value)} is not a switch: write {key}=true or {key}=false"
    return None


def workers_problem(value: Any, key: str) -> str | None:
    """Why ``value`` cannot be a loader worker count (null = from the CPU count, or 0 or more), or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        return f"{key}={as_typed(value)} must be null (from the CPU count) or 0 or more"
    return None


def threshold_problem(value: Any, key: str) -> str | None:
    """Why ``value`` cannot be a P(fake) threshold, or None. (An int 0 or 1 is fine: pass float(value)
    on, as torchmetrics refuses ints.)"""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return f"{key}={as_typed(value)} is not a probability: pick a value between 0 and 1"
    return None


def folder_instead_of_file(folder: Path, key: str, suffixes: tuple[str, ...]) -> str:
    """The message for a folder given where a model file is expected: the files in it, or up to two levels
    down (``outputs/train`` -> ``<run>/checkpoints/``), newest first, so the user can copy one."""
    found = sorted(
        (
            path
            for pattern in ("*", "*/*", "*/*/*")
            for path in folder.glob(pattern)
            if path.suffix.lower() in suffixes and path.is_file()
        ),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    if not found:
        kinds = " or ".join(suffixes)
        return (
            f"{key}={folder} is a folder, and neither it nor the folders up to two levels below it hold a "
            f"{kinds} file. Pass a file."
        )
    names = ", ".join(str(path) for path in found[:6]) + (f" and {len(found) - 6} more" if found[6:] else "")
    message = f"{key}={folder} is a folder; pass one of its files (newest first): {names}."
    if any(path.name == "last.ckpt" for path in found):
        message += " last.ckpt is the latest epoch, epochNNN-aurocX.ckpt the best by validation AUROC."
    return message


def list_option(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> list[str]:
    """A list option such as ``export.precisions``, also when given as ``key=a`` or ``'key="a,b"'`` (Hydra
    reads those as one string, which ``list()`` would split into characters); checked against
    ``choices``."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    items = [str(item) for item in value or []]
    unknown = [item for item in items if item not in choices]
    if unknown or not items:
        problem = f"unknown {', '.join(unknown)}" if unknown else "empty"
        raise UserError(
            f"{key}={items}: {problem}. Choose among {', '.join(choices)}, "
            f"e.g. {key}=[{','.join(choices[:2])}]."
        )
    return items
