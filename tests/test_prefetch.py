"""data.prefetch: the training loader hands out batches already on the device (and augmented, with
augment_on=gpu) one batch ahead, survives Lightning's DDP re-creation, and augments each batch once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _replace_dunder_methods
from lightning.pytorch.utilities.data import _update_dataloader
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ffd.data.datamodule import FacesDataModule
from ffd.data.prefetch import PrefetchLoader
from ffd.data.synthetic import generate
from ffd.models.classifier import DeepfakeClassifier


class AddSeen(nn.Module):
    """A deterministic 'augmentation' that counts its calls and marks each batch it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return images + 1


def samples(count: int) -> list[dict]:
    """Sample k: a 2 px image filled with k, label k mod 2."""
    return [{"image": torch.full((3, 2, 2), k, dtype=torch.uint8), "label": k % 2} for k in range(count)]


def test_batches_arrive_in_order_each_augmented_once_and_the_last_is_not_lost() -> None:
    data = samples(7)
    plain = list(DataLoader(data, batch_size=3))
    augment = AddSeen()
    ahead = PrefetchLoader(data, batch_size=3, device="cpu", augment=augment)
    for epoch in range(2):
        got = list(ahead)
        assert len(got) == len(plain) == 3  # 3 + 3 + 1: the short last batch too
        for mine, reference in zip(got, plain, strict=True):
            assert torch.equal(mine["image"], reference["image"] + 1)
            assert torch.equal(mine["label"], reference["label"])
        assert augment.calls == 3 * (epoch + 1)


def test_without_a_device_it_is_a_plain_dataloader() -> None:
    data = samples(4)
    loader = PrefetchLoader(data, batch_size=2, augment=AddSeen())
    plain = DataLoader(data, batch_size=2)
    assert [b["image"].tolist() for b in loader] == [b["image"].tolist() for b in plain]
    assert loader.augment.calls == 0


def test_lightning_recreates_it_with_a_distributed_sampler_and_keeps_device_and_augment() -> None:
    """Under DDP Lightning rebuilds the training loader with a DistributedSampler from its saved arguments."""
    augment = AddSeen()
    with _replace_dunder_methods(DataLoader, "dataset"):
        loader = PrefetchLoader(samples(8), batch_size=2, shuffle=True, device="cpu", augment=augment)
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=False)
    rebuilt = _update_dataloader(loader, sampler)
    assert type(rebuilt) is PrefetchLoader and rebuilt.sampler is sampler
    assert rebuilt.device == torch.device("cpu") and rebuilt.augment is augment
    images = torch.cat([b["image"][:, 0, 0, 0] for b in rebuilt])
    assert images.tolist() == [2, 4, 6, 8]  # rank 1's share (1, 3, 5, 7), each augmented once


@pytest.mark.parametrize(("prefetch", "output"), [(False, "uint8"), (True, "uint8"), (True, "float32")])
def test_a_fit_augments_every_training_batch_once_and_no_validation_batch(
    tmp_path: Path, prefetch: bool, output: str
) -> None:
    root = generate(tmp_path, image_size=16, train=12, val=4, test=4, progress=False)
    data = FacesDataModule(
        str(root),
        image_size=16,
        batch_size=4,
        num_workers=0,
        augment_on="gpu",
        prefetch=prefetch,
        augment_output=output,
    )
    seen, dtypes = [], []
    data.batch_augment.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    data.batch_augment.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "patch_size": 8, "depth": 1, "heads": 1})
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    assert seen == [4, 4, 4]  # 12 training images in batches of 4
    assert dtypes == [getattr(torch, output)] * 3  # and the model trained on them as they came
    loader = data.train_dataloader()
    assert isinstance(loader, PrefetchLoader) == prefetch
    if prefetch:
        assert loader.device == torch.device("cpu") and loader.augment is data.batch_augment
    batch = next(iter(data.val_dataloader()))
    data.trainer = SimpleNamespace(training=True, num_devices=1)
    before = len(seen)
    data.on_after_batch_transfer(batch, 0)
    assert len(seen) == before + (0 if prefetch else 1)  # the prefetching loader did it already
