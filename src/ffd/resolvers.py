"""The config interpolations ffd's configs use, registered when this module is imported:
${ffd.gpu_precision:} (conf/trainer/gpu.yaml), ${ffd.model_cache:} (conf/paths) and each command's --help
(conf/hydra/default.yaml). Every module that resolves a composed ffd config imports it: the entry points
through ffd.runtime, and the pipelines whose ``run(cfg)`` a caller may hand a config composed by hand."""

from __future__ import annotations

from omegaconf import OmegaConf

from ffd import command_help
from ffd.assets import default_cache_dir


def gpu_precision() -> str:
    """Lightning's autocast precision for this machine's GPU: bf16 where supported, else fp16."""
    import torch

    # including_emulation=False: a V100 or T4 can hold bf16 tensors but has no bf16 tensor cores.
    native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16-mixed" if native else "16-mixed"


def model_cache() -> str:
    """The model file cache, as ``python -m ffd.assets`` finds it ($FFD_CACHE, else ~/.cache/ffd; also
    without $HOME)."""
    return str(default_cache_dir())


for name, resolver in (
    ("ffd.gpu_precision", gpu_precision),
    ("ffd.model_cache", model_cache),
    ("ffd.usage", command_help.usage),
    ("ffd.config_groups", command_help.config_groups),
):
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, resolver)
