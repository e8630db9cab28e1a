"""BackboneFinetuning with real (tiny, CPU) Lightning runs of a DenseNetDetector on 32 px random images."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from ffd.callbacks.finetune import BackboneFinetuning, forward_order_layers
from ffd.errors import UserError
from ffd.models import DenseNetDetector, VisionTransformer

LR = 1e-3
# densenet121 has 120 convolutions (its layers; BatchNorm excluded); the top 25% are the last 30: both
# convolutions of dense layers 2..16 of the last dense block.
FIRST_UNFROZEN = "features.denseblock4.denselayer2.conv1"
LAST_UNFROZEN = "features.denseblock4.denselayer16.conv2"


class Tiny(L.LightningModule):
    """The minimum the callback needs (``self.net``), recording what each training step sees."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        images, labels = batch
        optimizer = self.trainer.optimizers[0]
        backbone = getattr(self.net, "backbone", self.net)
        top = dict(backbone.named_parameters()).get(f"{LAST_UNFROZEN}.weight")
        self.seen.append(
            {
                "epoch": self.current_epoch,
                "trainable": {n.rsplit(".", 1)[0] for n, p in backbone.named_parameters() if p.requires_grad},
                "bn_training": [m.training for m in backbone.modules() if isinstance(m, _BatchNorm)],
                "lrs": [group["lr"] for group in optimizer.param_groups],
                "top_has_adam_state": top is not None and bool(optimizer.state.get(top)),
            }
        )
        loss = F.binary_cross_entropy_with_logits(self.net(images), labels)
        return loss + self.net.regularization_loss() if hasattr(self.net, "regularization_loss") else loss

    def validation_step(self, batch, batch_idx):
        self.net(batch[0])

    def configure_optimizers(self):
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=LR)


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([0.0, 1.0] * 4)
    return DataLoader(TensorDataset(images, labels), batch_size=4)


def _fit(
    module: L.LightningModule,
    callback: BackboneFinetuning,
    max_epochs: int,
    tmp_path,
    batches: int = 1,
    strategy: str | L.pytorch.strategies.Strategy = "auto",
    **kwargs,
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        strategy=strategy,
        max_epochs=max_epochs,
        limit_train_batches=batches,
        limit_val_batches=1,  # a validation run per epoch: Lightning restores module modes after it
        num_sanity_val_steps=0,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, _loader(), _loader(), **kwargs)
    return trainer


def _densenet() -> DenseNetDetector:
    torch.manual_seed(0)
    return DenseNetDetector(pretrained=False)


def _batchnorm_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Every BatchNorm tensor of the backbone: affine parameters, running stats and batch counters."""
    names = {name for name, m in backbone.named_modules() if isinstance(m, _BatchNorm)}
    return {k: v.clone() for k, v in backbone.state_dict().items() if k.rsplit(".", 1)[0] in names}


def test_two_stages_with_batchnorm_frozen_throughout(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ffd.callbacks.finetune")
    module = Tiny(_densenet())
    backbone = module.net.backbone
    batchnorm_before = _batchnorm_state(backbone)
    weights_before = {k: v.clone() for k, v in backbone.state_dict().items()}
    head_mean_before = module.net.head.norm1.running_mean.clone()
    callback = BackboneFinetuning(warmup_epochs=1, unfreeze_fraction=0.25, lr_factor=0.1)
    trainer = _fit(module, callback, max_epochs=2, tmp_path=tmp_path, batches=2)
    assert trainer.optimizers[0].param_groups[-1]["name"] == "unfrozen"  # its own curve in TensorBoard

    stage1 = [s for s in module.seen if s["epoch"] == 0]
    stage2 = [s for s in module.seen if s["epoch"] == 1]
    assert len(stage1) == len(stage2) == 2
    # Stage 1: nothing of the backbone trains, one parameter group (the head's).
    assert all(s["trainable"] == set() and s["lrs"] == [LR] for s in stage1)
    # Stage 2: exactly the top 25% of the 120 layers, in their own group at lr * 0.1.
    assert len(callback.layer_names) == 120
    assert all(name.rsplit(".", 1)[-1].startswith("conv") for name in callback.layer_names)
    assert callback.unfrozen_count == 30
    assert callback.unfrozen_names == callback.layer_names[-30:]
    assert (callback.unfrozen_names[0], callback.unfrozen_names[-1]) == (FIRST_UNFROZEN, LAST_UNFROZEN)
    assert all(s["trainable"] == set(callback.unfrozen_names) for s in stage2)
    assert all(s["lrs"] == pytest.approx([LR, LR * 0.1]) for s in stage2)
    assert callback.unfrozen_lr == pytest.approx(LR * 0.1)
    # BatchNorm: in eval mode at every step of both stages (after the validation runs too), and its
    # running statistics, counters and affine parameters untouched.
    assert all(not any(s["bn_training"]) for s in module.seen)
    after = backbone.state_dict()
    for key, value in batchnorm_before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    # Training did happen: the head's BatchNorm moved, the unfrozen convolutions changed, the rest did not.
    assert not torch.equal(module.net.head.norm1.running_mean, head_mean_before)
    assert not torch.equal(after[f"{LAST_UNFROZEN}.weight"], weights_before[f"{LAST_UNFROZEN}.weight"])
    torch.testing.assert_close(after["features.conv0.weight"], weights_before["features.conv0.weight"])
    torch.testing.assert_close(
        after["features.denseblock4.denselayer1.conv2.weight"],
        weights_before["features.denseblock4.denselayer1.conv2.weight"],
    )
    assert f"unfroze the top 30 of 120 backbone layers ({FIRST_UNFROZEN} ... {LAST_UNFROZEN})" in caplog.text


class SyncBatchNormLikeDDP(SingleDeviceStrategy):
    """DDPStrategy.setup's first step with sync_batchnorm (trainer=ddp), which a CPU run cannot take
    under DDP itself: every BatchNorm replaced by a new SyncBatchNorm after the callbacks' setup."""

    def setup(self, trainer: L.Trainer) -> None:
        self.model = TorchSyncBatchNorm().apply(self.model)
        super().setup(trainer)


def test_batchnorm_stays_frozen_when_the_strategy_swaps_in_sync_batchnorm(tmp_path) -> None:
    module = Tiny(_densenet())
    strategy = SyncBatchNormLikeDDP(torch.device("cpu"))
    _fit(module, BackboneFinetuning(warmup_epochs=1), max_epochs=2, tmp_path=tmp_path, strategy=strategy)
    norms = [m for m in module.net.backbone.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert all(not any(s["bn_training"]) for s in module.seen), [sum(s["bn_training"]) for s in module.seen]


def test_zero_warmup_unfreezes_at_the_start(tmp_path) -> None:
    module = Tiny(_densenet())
    callback = BackboneFinetuning(warmup_epochs=0, unfreeze_fraction=0.5, lr_factor=0.5)
    _fit(module, callback, max_epochs=1, tmp_path=tmp_path)
    first = module.seen[0]
    assert first["epoch"] == 0 and first["lrs"] == pytest.approx([LR, LR * 0.5])
    assert callback.unfrozen_count == 60 and first["trainable"] == set(callback.layer_names[-60:])
    assert not any(first["bn_training"])


def test_resuming_in_stage_two_restores_the_group_and_the_unfrozen_layers(tmp_path, caplog) -> None:
    first = Tiny(_densenet())
    trainer = _fit(first, BackboneFinetuning(warmup_epochs=1), max_epochs=2, tmp_path=tmp_path)
    checkpoint = tmp_path / "stage2.ckpt"
    trainer.save_checkpoint(checkpoint)

    resumed = Tiny(_densenet())
    callback = BackboneFinetuning(warmup_epochs=1)
    caplog.clear()
    with caplog.at_level("INFO", logger="ffd.callbacks.finetune"):
        _fit(resumed, callback, max_epochs=3, tmp_path=tmp_path, ckpt_path=checkpoint)
    assert "Epoch 2: resumed with the top 30" in caplog.text and "unfroze" not in caplog.text
    assert [s["epoch"] for s in resumed.seen] == [2]
    step = resumed.seen[0]
    assert step["lrs"] == pytest.approx([LR, LR * 0.1])  # the restored group, not a second copy
    assert step["trainable"] == set(callback.unfrozen_names) and callback.unfrozen_count == 30
    assert step["top_has_adam_state"]  # the optimizer state of the unfrozen layers came back with it
    assert not any(step["bn_training"])


def test_a_network_without_backbone_is_refused_clearly(tmp_path) -> None:
    module = Tiny(VisionTransformer(image_size=32))
    with pytest.raises(UserError, match=r"pl_module\.net\.backbone.*VisionTransformer.*~callbacks\.finetune"):
        _fit(module, BackboneFinetuning(), max_epochs=1, tmp_path=tmp_path)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UserError, match="unfreeze_fraction"):
        BackboneFinetuning(unfreeze_fraction=1.5)


class Shuffled(nn.Module):
    """Registered b, norm, a, unused; called a, norm, b, then a again."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.a = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)
        self.pretrained_cfg = {"input_size": (4,)}  # what timm's data config reads for the dummy input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(self.b(self.norm(self.a(x))))


def test_layers_are_in_forward_order_without_batchnorm_or_uncalled_modules() -> None:
    net = Shuffled().train()
    running_mean = net.norm.running_mean.clone()
    layers = forward_order_layers(net)
    assert [name for name, _ in layers] == ["a", "b"]
    assert net.training and net.norm.training  # modes restored after the traced forward
    assert torch.equal(net.norm.running_mean, running_mean)  # the dummy input left no trace


class ReportsRankSums(Tiny):
    """Writes each process's checksum of the last unfrozen layer at the end of training (rank 0 writes)."""

    def __init__(self, net: nn.Module, out: str) -> None:
        super().__init__(net)
        self.out = out

    def on_train_end(self) -> None:
        callback = next(c for c in self.trainer.callbacks if isinstance(c, BackboneFinetuning))
        weight = dict(self.net.backbone.named_parameters())[f"{callback.unfrozen_names[-1]}.weight"]
        sums = self.all_gather(weight.detach().double().sum())
        if self.global_rank == 0:
            torch.save(sums, self.out)


@pytest.mark.slow
def test_unfrozen_layers_stay_in_sync_across_ddp_processes(tmp_path) -> None:
    """DDP syncs only what required grad when it wrapped the model; the callback re-wraps after unfreezing."""
    torch.manual_seed(0)
    out = tmp_path / "sums.pt"
    module = ReportsRankSums(DenseNetDetector(backbone="resnet10t", pretrained=False), str(out))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=0,
        callbacks=[BackboneFinetuning(warmup_epochs=1)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, _loader())  # each process sees different images (DistributedSampler)
    sums = torch.load(out, weights_only=True)
    assert sums.shape == (2,) and sums[0] == sums[1]
