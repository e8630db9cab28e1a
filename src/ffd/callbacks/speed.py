"""GPU speed settings that belong to neither the model nor the data: memory layout, compilation, TF32.

Kept out of the checkpoint: a model trained with them loads and runs anywhere without them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class SpeedUps(Callback):
    """Allow TF32 matrix products, and put the network in channels_last and compile it before fitting.

    Args:
        channels_last: NHWC weights, so cuDNN runs its tensor-core convolution kernels without transposes
            (the input follows the first convolution's layout). A no-op for the math, a large win under
            bf16 on Ampere and newer GPUs.
        compile: ``torch.compile`` the network in place (``nn.Module.compile``, so the checkpoint's keys do
            not change): False, True, or a mapping of ``torch.compile`` arguments. ``{mode: reduce-overhead}``
            replays each step as one CUDA graph, for networks whose step is launch-bound on the host
            (DenseNet121: ~2,000 kernels per step); each batch then starts a new graph step
            (``torch.compiler.cudagraph_mark_step_begin``). Costs a minute or two of compilation at the start
            of a run; on a CPU the CUDA graphs are skipped.
        matmul_precision: ``torch.set_float32_matmul_precision`` ("high" lets float32 products use TF32),
            set when the callback is made: Lightning checks it when the trainer takes the GPU, before any
            callback's ``setup``, and told users of ``trainer=gpu`` to set what this sets.
    """

    def __init__(
        self,
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,
        matmul_precision: str | None = "high",
    ) -> None:
        self.channels_last = channels_last
        self.compile = compile
        self.matmul_precision = matmul_precision
        self._applied = False
        if matmul_precision:
            torch.set_float32_matmul_precision(matmul_precision)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._applied:
            return
        self._applied = True
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            options = dict(self.compile) if isinstance(self.compile, Mapping) else {}
            log.info("Compiling %s with torch.compile(%s).", type(pl_module.net).__name__, options or "")
            pl_module.net.compile(**options)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """A new step for CUDA graph trees, whose previous outputs may be overwritten from now on (a cheap
        no-op for compile modes without CUDA graphs)."""
        if self.compile:
            torch.compiler.cudagraph_mark_step_begin()

    on_validation_batch_start = on_test_batch_start = on_predict_batch_start = on_train_batch_start
