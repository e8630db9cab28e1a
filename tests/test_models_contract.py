"""The input contract every registered network keeps: RGB 0..255 as uint8 or float, contiguous or
channels_last, gives the same single logit per image."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ffd.models import NETS, create_net
from ffd.models.classifier import CosineSchedule, DeepfakeClassifier

SMALL = {"densenet": {"pretrained": False}, "vit": {"image_size": 32}}


@pytest.mark.parametrize("name", sorted(NETS))
def test_one_logit_per_image_for_uint8_float_and_channels_last(name: str) -> None:
    net = create_net(name, **SMALL[name]).eval()
    images = torch.randint(
        0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        logits = net(images)
        as_float = net(images.float())
        channels_last = net(images.float().contiguous(memory_format=torch.channels_last))
    assert logits.shape == (3,)
    torch.testing.assert_close(as_float, logits)
    torch.testing.assert_close(channels_last, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.filterwarnings("ignore:No negative samples in targets")
def test_metrics_score_logits_even_when_a_batch_of_them_all_lies_in_0_1(monkeypatch) -> None:
    """torchmetrics takes a batch of values all in [0, 1] for probabilities: logits 0.2..0.9 (P(fake)
    0.55..0.71) would be thresholded as they are and half of these fakes called real."""
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 32, "dim": 16, "depth": 1})
    logits = torch.tensor([0.2, 0.4, 0.6, 0.9])
    monkeypatch.setattr(model, "forward", lambda images: logits)
    batch = {"image": torch.zeros(4, 3, 32, 32, dtype=torch.uint8), "label": torch.ones(4)}
    model.validation_step(batch, 0)  # no trainer: self.log is a no-op, the metrics still update
    scores = model.val_metrics.compute()
    assert scores["val/accuracy"] == 1.0 and scores["val/recall"] == 1.0, scores


def test_epoch_metrics_are_those_of_the_epochs_predictions_alone(tmp_path) -> None:
    """Logged once per epoch from the whole epoch; the sanity check's predictions are not carried over."""
    import lightning as L
    from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

    torch.manual_seed(0)
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "dim": 16, "depth": 1})
    images = torch.randint(0, 256, (28, 3, 16, 16), dtype=torch.uint8)
    data = [{"image": images[i], "label": torch.tensor(float(i % 3 == 0))} for i in range(28)]
    train, val = (
        torch.utils.data.DataLoader(data[:16], batch_size=4),
        torch.utils.data.DataLoader(data[16:], 4),
    )
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, train, val)
    model.eval()
    with torch.no_grad():
        p_fake = torch.cat([torch.sigmoid(model(batch["image"])) for batch in val])
    labels = torch.cat([batch["label"] for batch in val]).int()
    logged = trainer.callback_metrics
    assert float(logged["val/auroc"]) == pytest.approx(float(BinaryAUROC()(p_fake, labels)))
    assert float(logged["val/accuracy"]) == pytest.approx(float(BinaryAccuracy()(p_fake, labels)))
    assert {"train/accuracy", "train/auroc", "train/auprc"} <= set(logged)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_metrics_take_float32_probabilities_under_bf16_autocast() -> None:
    """Under bf16-mixed the logits are bf16: their sigmoid would keep 8 bits of mantissa, so AUROC, which
    picks the checkpoint and drives the schedule, would rank coarsely rounded probabilities."""
    model = DeepfakeClassifier(net={"name": "vit", "image_size": 16, "dim": 8, "depth": 1})
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.validation_step({"image": images, "label": torch.tensor([0.0, 1.0, 0.0, 1.0])}, 0)
        probabilities = model.predict_step({"image": images}, 0)
    stored = model.val_metrics["auroc"].preds
    assert stored and all(p.dtype == torch.float32 for p in stored)
    assert probabilities.dtype == torch.float32


def documented_factor(epoch: int) -> float:
    """CosineSchedule's docstring, written out for 10 epochs, 1 of linear warm-up, a floor of 0.01: the
    warm-up epoch at half the rate, then a cosine from the full rate at epoch 1 to the floor at epoch 10."""
    if epoch < 1:
        return (epoch + 1) / 2
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / 9))


def test_cosine_schedule_carries_a_parameter_group_added_by_fine_tuning() -> None:
    head, backbone = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([head], lr=1.0)
    schedule = CosineSchedule(optimizer, total_epochs=10, warmup_epochs=1, min_lr_factor=0.01)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(documented_factor(0))
    for epoch in range(1, 4):
        optimizer.step()
        schedule.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(documented_factor(epoch)), epoch
    # What BackboneFinetuning does at an epoch start: a new group at a tenth of the current rate.
    optimizer.add_param_group({"params": [backbone], "lr": optimizer.param_groups[0]["lr"] * 0.1})
    for epoch in range(4, 11):
        optimizer.step()
        schedule.step()
        head_lr, backbone_lr = (group["lr"] for group in optimizer.param_groups)
        assert head_lr == pytest.approx(documented_factor(epoch)), epoch
        assert backbone_lr == pytest.approx(head_lr * 0.1), epoch
    assert head_lr == pytest.approx(0.01)


@pytest.mark.parametrize("name", ["plateau", "cosine"])
def test_densenet_config_takes_either_schedule(name: str) -> None:
    """model/densenet.yaml holds the plateau's settings; model.scheduler.name=cosine must still work."""
    net = {"name": "vit", "image_size": 16, "dim": 8, "depth": 1}
    model = DeepfakeClassifier(net=net, scheduler={"name": name, "factor": 0.5, "patience": 2})
    model.trainer = SimpleNamespace(max_epochs=5)  # what configure_optimizers reads of the trainer
    scheduler = model.configure_optimizers()["lr_scheduler"]
    if name == "plateau":
        assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
        assert (scheduler["scheduler"].factor, scheduler["scheduler"].patience) == (0.5, 2)
    else:
        assert isinstance(scheduler, CosineSchedule) and scheduler.total_epochs == 5


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "message"),
    [
        ({}, {"name": "plateau", "patiense": 2}, "model.scheduler has unknown key(s) patiense; known: "),
        ({}, {"name": "cosin"}, "model.scheduler.name=cosin is not one of: plateau, cosine, none."),
        ({"lr": -1}, None, "model.optimizer.lr=-1 must be a number, 0 or more"),
        ({"lr": "fast"}, None, "model.optimizer.lr=fast must be a number, 0 or more"),
    ],
)
def test_training_settings_that_cannot_work_are_refused_when_the_model_is_built(
    optimizer, scheduler, message
):
    """These failed in configure_optimizers (or inside AdamW), after the data were indexed: a traceback."""
    from ffd.errors import UserError

    net = {"name": "vit", "image_size": 16, "dim": 8, "depth": 1}
    with pytest.raises(UserError) as error:
        DeepfakeClassifier(net=net, optimizer=optimizer, scheduler=scheduler)
    assert message in str(error.value)


def test_a_checkpoint_that_needs_pickled_code_is_refused_in_one_line(tmp_path) -> None:
    """PyTorch's own message advises weights_only=False; ffd's error must not pass that advice on."""
    from ffd.errors import CheckpointError
    from ffd.models.checkpoint import load_classifier

    path = tmp_path / "model.ckpt"
    torch.save(nn.Linear(2, 1), path)  # a whole pickled module, not a state dict
    with pytest.raises(CheckpointError) as error:
        load_classifier(path)
    message = str(error.value)
    assert str(path) in message and "never runs pickled code" in message
    assert "weights_only=False" not in message and "\n" not in message


def test_an_onnx_file_given_as_a_checkpoint_names_the_command_that_reads_it(tmp_path) -> None:
    """ffd.eval ckpt_path=model.onnx said 'not a PyTorch file of tensors'."""
    from ffd.errors import CheckpointError
    from ffd.models.checkpoint import load_classifier

    path = tmp_path / "vit_64px_fp32.onnx"
    path.write_bytes(b"\x08\x07onnx-bytes")
    with pytest.raises(CheckpointError, match=r"exported ONNX model; this command takes the \.ckpt") as error:
        load_classifier(path)
    assert f"ffd.predict input=FOLDER model={path}" in str(error.value)


def _fit_schedule(
    tmp_path, scheduler: dict, max_epochs: int, ckpt_path=None, callbacks=()
) -> DeepfakeClassifier:
    """A tiny ViT fitted on 8 random images, writing checkpoints/last.ckpt at every epoch end as
    conf/callbacks/default.yaml's latest_checkpoint does."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    model = DeepfakeClassifier(
        net={"name": "vit", "image_size": 16, "dim": 8, "depth": 1}, scheduler=scheduler
    )
    images = torch.randint(
        0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    data = [{"image": images[i], "label": torch.tensor(float(i % 2))} for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None, enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        callbacks=[last, *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader, loader, ckpt_path=ckpt_path)
    return model


def test_a_resumed_fit_counts_every_epoch_in_the_plateau_schedule(tmp_path) -> None:
    """last.ckpt is written at the end of an epoch: the plateau schedule must have seen that epoch's
    val/auroc by then, or the resumed fit never counts it and halves the rate one epoch late."""
    plateau = {"name": "plateau", "factor": 0.5, "patience": 0}
    _fit_schedule(tmp_path, plateau, max_epochs=2)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["lr_schedulers"][0]
    assert saved["last_epoch"] == 2, saved  # epochs 0 and 1 counted
    resumed = _fit_schedule(tmp_path, plateau, max_epochs=3, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3


def test_a_resumed_plateau_schedule_takes_this_runs_settings(tmp_path) -> None:
    """torch's load_state_dict restored the checkpoint's patience and factor over the resumed run's."""
    _fit_schedule(tmp_path, {"name": "plateau", "factor": 0.5, "patience": 2}, max_epochs=2)
    changed = {"name": "plateau", "factor": 0.25, "patience": 0}
    resumed = _fit_schedule(tmp_path, changed, max_epochs=3, ckpt_path=tmp_path / "last.ckpt")
    schedule = resumed.trainer.lr_scheduler_configs[0].scheduler
    assert (schedule.factor, schedule.patience, schedule.last_epoch) == (0.25, 0, 3)


def test_a_resumed_cosine_schedule_decays_over_the_new_max_epochs(tmp_path) -> None:
    """The first resumed epoch trained at the old horizon's floor (1/100 of the rate), as the optimizer had
    been saved with it; the README promises the schedule stretched to the new end."""
    import lightning as L

    class Rates(L.Callback):
        def __init__(self) -> None:
            self.seen: list[float] = []

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    cosine = {"name": "cosine", "warmup_epochs": 0, "min_lr_factor": 0.01}
    _fit_schedule(tmp_path, cosine, max_epochs=2)
    rates = Rates()
    resumed = _fit_schedule(
        tmp_path, cosine, max_epochs=4, ckpt_path=tmp_path / "last.ckpt", callbacks=[rates]
    )
    schedule = resumed.trainer.lr_scheduler_configs[0].scheduler
    assert schedule.total_epochs == 4 and schedule.last_epoch == 4  # the checkpoint's horizon was 2
    stretched = [1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * epoch / 4))) for epoch in (2, 3)]
    assert rates.seen == pytest.approx(stretched)
