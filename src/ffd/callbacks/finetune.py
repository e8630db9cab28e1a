"""Two-stage fine-tuning of a pretrained backbone, as in the Keras reference, on Lightning's BaseFinetuning.

Stage 1 (the first ``warmup_epochs`` epochs): the whole backbone is frozen and only the head trains.
Stage 2 (from epoch ``warmup_epochs`` on): the top ``unfreeze_fraction`` of the backbone's layers train too,
in their own optimizer parameter group at ``lr_factor`` x the current lr of the first group.
``warmup_epochs=0`` unfreezes at the start of training.

BatchNorm layers of the backbone stay frozen in both stages: no gradient *and* eval mode, so they normalise
with the ImageNet running statistics and never update them (Lightning's ``freeze`` alone only sets
``track_running_stats=False``, which in train mode normalises with batch statistics). Eval mode is
re-applied at every training batch, after anything (Lightning's mode restore after validation, a user's
``.train()``) could have reset it.

A *layer* is a leaf module (one without children) that owns parameters and is not a BatchNorm, in the
order a forward pass first calls it. The order is traced once, with forward pre-hooks, on a dummy input of
the backbone's pretrained input size: exact for any timm backbone, where registration order can differ
from execution order. Stage 2 unfreezes the last ``ceil(unfreeze_fraction x number of layers)`` of them.
For densenet121 that is 30 of its 120 convolutions: the last 15 of the 16 dense layers of ``denseblock4``,
the same 15 dense layers Keras unfreezes with ``fine_tune_at = int(0.75 * len(base_model.layers))``.
Parameters owned by non-leaf modules (e.g. a timm ViT's ``pos_embed``) are not layers and stay frozen.
"""

from __future__ import annotations

import logging
import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.strategies import DDPStrategy
from timm.data import resolve_model_data_config
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from ffd.errors import UserError

log = logging.getLogger(__name__)


class BackboneFinetuning(BaseFinetuning):
    """Freeze ``pl_module.net.backbone``, then unfreeze its top layers; BatchNorm stays frozen throughout.

    Args:
        warmup_epochs: epochs of stage 1 (head only); 0 starts with stage 2.
        unfreeze_fraction: share of the backbone's layers (see the module docstring) to unfreeze, 0..1.
        lr_factor: the unfrozen layers' lr as a factor of the first parameter group's lr at the switch.

    After setup, ``layer_names`` lists every layer in forward order; after the switch, ``unfrozen_names``
    and ``unfrozen_lr`` say what was unfrozen and at which lr.
    """

    def __init__(
        self, warmup_epochs: int = 2, unfreeze_fraction: float = 0.25, lr_factor: float = 0.1
    ) -> None:
        super().__init__()
        if warmup_epochs < 0 or not 0.0 <= unfreeze_fraction <= 1.0 or lr_factor <= 0:
            raise UserError(
                "Finetuning needs warmup_epochs >= 0, 0 <= unfreeze_fraction <= 1, lr_factor > 0; got "
                f"{warmup_epochs}, {unfreeze_fraction}, {lr_factor}: fix callbacks.finetune in the config."
            )
        self.warmup_epochs = warmup_epochs
        self.unfreeze_fraction = unfreeze_fraction
        self.lr_factor = lr_factor
        self.layer_names: list[str] = []
        self.unfrozen_names: list[str] = []
        self.unfrozen_lr: float | None = None
        self._top_layers: list[nn.Module] = []
        self._top_names: list[str] = []
        self._batchnorms: list[nn.Module] = []
        self._unfrozen = False

    @property
    def unfrozen_count(self) -> int:
        return len(self.unfrozen_names)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        backbone = _find_backbone(pl_module)
        self.freeze(backbone, train_bn=False)
        layers = forward_order_layers(backbone)
        self.layer_names = [name for name, _ in layers]
        count = math.ceil(self.unfreeze_fraction * len(layers))
        top = layers[len(layers) - count :]
        self._top_layers = [module for _, module in top]
        self._top_names = [name for name, _ in top]
        self._unfrozen = False

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch < self.warmup_epochs or self._unfrozen:
            return
        resumed = _in_optimizer(self._top_layers, optimizer)
        if resumed:
            # Resumed in stage 2: BaseFinetuning.on_fit_start has already restored the parameter group.
            self.make_trainable(self._top_layers)
        else:
            lr = optimizer.param_groups[0]["lr"] * self.lr_factor
            self.unfreeze_and_add_param_group(self._top_layers, optimizer, lr=lr, train_bn=False)
            optimizer.param_groups[-1]["name"] = "unfrozen"  # its learning-rate curve in TensorBoard
        self._unfrozen = True
        self.unfrozen_names = list(self._top_names)
        self.unfrozen_lr = optimizer.param_groups[-1]["lr"] if self._top_layers else None
        if self._top_layers and pl_module.trainer.is_global_zero:
            log.info(
                "Epoch %d: %s the top %d of %d backbone layers (%s ... %s) at lr %.3g; BatchNorm stays "
                "frozen.",
                epoch,
                "resumed with" if resumed else "unfroze",
                self.unfrozen_count,
                len(self.layer_names),
                self.unfrozen_names[0],
                self.unfrozen_names[-1],
                self.unfrozen_lr,
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        was_unfrozen = self._unfrozen
        super().on_train_epoch_start(trainer, pl_module)
        if self._unfrozen and not was_unfrozen and isinstance(trainer.strategy, DDPStrategy):
            # DDP synchronises only the parameters that required grad when it wrapped the model, so the
            # unfrozen layers would train apart on each process (Lightning issue #20340): wrap it anew.
            trainer.strategy.model = pl_module
            trainer.strategy.configure_ddp()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Looked up here, not at setup: the strategy may have replaced them since (DDP with
        # sync_batchnorm, as trainer=ddp sets, swaps every BatchNorm for a new SyncBatchNorm).
        self._batchnorms = [m for m in _find_backbone(pl_module).modules() if isinstance(m, _BatchNorm)]

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        for module in self._batchnorms:
            module.eval()


def forward_order_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's layers (leaf, parameter-owning, non-BatchNorm modules) in forward-call order."""
    candidates = {
        module: name
        for name, module in backbone.named_modules()
        if not any(True for _ in module.children())
        and any(True for _ in module.parameters(recurse=False))
        and not isinstance(module, _BatchNorm)
    }
    order: dict[nn.Module, str] = {}  # insertion-ordered; a module called twice keeps its first place

    def record(module: nn.Module, args: object) -> None:
        order.setdefault(module, candidates[module])

    handles = [module.register_forward_pre_hook(record) for module in candidates]
    parameter = next(backbone.parameters())
    dummy = torch.zeros(
        1, *resolve_model_data_config(backbone)["input_size"], device=parameter.device, dtype=parameter.dtype
    )
    was_training = {module: module.training for module in backbone.modules()}
    try:
        backbone.eval()  # batch of one; and running statistics must not see the dummy input
        with torch.no_grad():
            backbone(dummy)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in was_training.items():
            module.training = training
    return [(name, module) for module, name in order.items()]


def _find_backbone(pl_module: pl.LightningModule) -> nn.Module:
    backbone = getattr(getattr(pl_module, "net", None), "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise UserError(
            "BackboneFinetuning needs a pretrained backbone at pl_module.net.backbone, and "
            f"{type(pl_module).__name__}.net ({type(getattr(pl_module, 'net', None)).__name__}) has none. "
            "It is meant for model=densenet; drop it for networks trained from scratch "
            "(Hydra: ~callbacks.finetune)."
        )
    return backbone


def _in_optimizer(modules: list[nn.Module], optimizer: Optimizer) -> bool:
    ids = {id(p) for module in modules for p in module.parameters(recurse=False)}
    return any(id(p) in ids for group in optimizer.param_groups for p in group["params"])
