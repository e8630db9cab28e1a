"""The measurements ``ffd.bench`` takes: (a) the bare training step, (b) the data pipeline and the GPU
augmentation alone, and the clock and profiler (``StepTimer``, ``StepProfile``) it puts into (c), the full
``ffd.train`` loop. Each returns images/s; the bench (``ffd.bench``) runs them and tabulates the rows."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch.autograd import DeviceType

from ffd.data.gpu_augment import BatchAugment
from ffd.models.classifier import make_adamw


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def reset_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _timed(run: Callable[[], int], warmup: int, repeats: int) -> float:
    """Images per second of ``run`` (which returns the images it handled), after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    _sync()
    start, images = time.perf_counter(), 0
    for _ in range(repeats):
        images += run()
    _sync()
    return images / (time.perf_counter() - start)


class StepProfile:
    """torch.profiler over a few steps: where the host and the GPU spend each step (a table in a file)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.profiler: torch.profiler.profile | None = None
        self.steps = 0
        self.start = 0.0

    def begin(self) -> None:
        if self.path is None:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        _sync()
        self.profiler = torch.profiler.profile(activities=activities)
        self.profiler.__enter__()
        self.start = time.perf_counter()

    def step(self) -> None:
        self.steps += self.profiler is not None

    def end(self) -> None:
        if self.profiler is None or self.path is None:
            return
        _sync()
        wall_ms = (time.perf_counter() - self.start) * 1e3 / max(self.steps, 1)
        self.profiler.__exit__(None, None, None)
        events = self.profiler.key_averages()
        # Kernel time only: user annotations (Optimizer.step, ...) repeat their kernels' time.
        kernels = [e for e in events if e.device_type != DeviceType.CPU and not e.is_user_annotation]
        device_us = sum(e.self_device_time_total for e in kernels) / max(self.steps, 1)
        lines = [
            f"{self.steps} steps profiled: {wall_ms:.1f} ms wall per step, {device_us / 1e3:.1f} ms of GPU "
            f"kernels per step (GPU busy {device_us / 1e3 / wall_ms:.0%} of the wall time, profiler on)",
            events.table(sort_by="self_device_time_total", row_limit=25),
            events.table(sort_by="self_cpu_time_total", row_limit=25),
        ]
        self.path.write_text("\n".join(lines))
        self.profiler = None


class StepTimer(Callback):
    """Times the training steps after the first ``warmup_steps`` (compilation, cuDNN autotuning, worker
    start-up) and writes images/s and peak GPU memory to ``result_path`` when training ends.

    The peak covers the warm-up too, as the bare step's does: CUDA graphs allocate their memory pool while
    they are recorded, in the warm-up, and replays allocate nothing (a peak counted from the first timed
    step read 0.3 GiB for a ViT loop that holds 2.9)."""

    def __init__(
        self, warmup_steps: int, result_path: str, profile_steps: int = 0, profile_path: str | None = None
    ) -> None:
        self.warmup_steps = warmup_steps
        self.result_path = Path(result_path)
        self.profile_steps = min(profile_steps, warmup_steps // 2)
        self.profile = StepProfile(Path(profile_path) if profile_path and self.profile_steps else None)
        self.start: float | None = None
        self.seconds: float | None = None
        self.images = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup_steps and self.start is None:
            self.profile.end()
            _sync()
            self.start = time.perf_counter()
        if self.start is not None:
            self.images += len(batch["label"])
        # The profile covers the last warm-up steps, so it does not slow the timed ones.
        if trainer.global_step == self.warmup_steps - self.profile_steps:
            self.profile.begin()
        self.profile.step()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        """The clock stops at the end of the last step, before the epoch-end work (epoch metrics, logging)."""
        if trainer.global_step >= trainer.max_steps and self.seconds is None and self.start is not None:
            _sync()
            self.seconds = time.perf_counter() - self.start

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.seconds is None:
            raise RuntimeError(f"Training stopped before its last step ({trainer.max_steps}): raise steps.")
        result = {"images_per_s": self.images / self.seconds, "images": self.images, "seconds": self.seconds}
        self.result_path.write_text(json.dumps({**result, "peak_gib": _peak_memory_gib()}))


def _autocast(precision: str) -> Any:
    """The autocast context Lightning uses for a precision setting ('bf16-mixed', '16-mixed', '32-true')."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    return torch.autocast(device, dtype=dtype) if dtype else nullcontext()


def bare_step(
    train_cfg: DictConfig, steps: int, warmup: int, profile_steps: int = 0, profile_path: Path | None = None
) -> dict[str, Any]:
    """(a): forward, loss, backward and AdamW step on random uint8 batches resident on the device."""
    reset_memory()
    # As the loop's Trainer sets it (trainer.benchmark); Lightning leaves it set for whatever runs next.
    torch.backends.cudnn.benchmark = bool(train_cfg.trainer.get("benchmark") or False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = instantiate(train_cfg.model, _convert_="all").to(device).train()
    speed = train_cfg.callbacks.get("speed")
    if speed:
        instantiate(speed).setup(None, model, "fit")
    optimizer = make_adamw(list(model.parameters()), train_cfg.model.get("optimizer"))
    size, batch = train_cfg.data.image_size, train_cfg.data.batch_size
    # Several distinct random batches (never zeros), so no step sees the data of the one before.
    batches = [
        (
            torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device),
            torch.randint(0, 2, (batch,), device=device).float(),
        )
        for _ in range(4)
    ]
    scaler = torch.amp.GradScaler(enabled=train_cfg.trainer.precision == "16-mixed")
    cycle = iter(range(1 << 62))

    def step() -> int:
        images, labels = batches[next(cycle) % len(batches)]
        torch.compiler.cudagraph_mark_step_begin()  # as SpeedUps does in training
        with _autocast(train_cfg.trainer.precision):
            loss = model.criterion(model(images), labels)
            if hasattr(model.net, "regularization_loss"):
                loss = loss + model.net.regularization_loss()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return batch

    if profile_path is not None:  # a few steps under the profiler, after the warm-up
        for _ in range(warmup):
            step()
        profile = StepProfile(profile_path)
        profile.begin()
        for _ in range(min(profile_steps, steps)):
            step()
            profile.step()
        profile.end()
    images_per_s = _timed(step, warmup, steps)  # the model and batches are freed on return
    return {"images_per_s": images_per_s, "peak_gib": _peak_memory_gib()}


def data_pipeline(train_cfg: DictConfig, batches: int, warmup: int) -> dict[str, Any]:
    """(b): images/s of the training loader alone (read, decode, augment on CPU or not, collate, pin)."""
    datamodule = instantiate(train_cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()

    def endless() -> Iterator[dict[str, Any]]:
        while True:
            yield from loader

    stream = endless()
    # The persistent workers stop when the loader is freed, on return.
    return {
        "images_per_s": _timed(lambda: len(next(stream)["label"]), warmup, batches),
        "workers": loader.num_workers,
    }


def gpu_augment(train_cfg: DictConfig, batches: int) -> dict[str, Any]:
    """(b'): images/s of ``BatchAugment`` alone on device-resident uint8 batches."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size, batch = train_cfg.data.image_size, train_cfg.data.batch_size
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    augment = BatchAugment()
    return {"images_per_s": _timed(lambda: len(augment(images)), 3, batches)}
