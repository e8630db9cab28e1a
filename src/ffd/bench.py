"""python -m ffd.bench [models=[densenet,vit]] [image_size=256] [batch_size=128] [steps=200] [...]

Where training time goes, per model, on whatever device is present, with the settings ``ffd.train`` uses
there (``trainer=gpu`` on a GPU: bf16, channels_last, torch.compile; ``trainer=cpu`` otherwise):

  (a) step   the bare training step (forward, loss, backward, AdamW) on random uint8 batches already on the
             device: the ceiling for everything else;
  (b) data   the training data pipeline alone: read the JPEG files, decode, augment (or not, when the
             augmentation runs on the GPU), collate, pin; and the GPU augmentation alone;
  (c) loop   the full ``ffd.train`` loop (Lightning, data, metrics, logging, callbacks) on the same files,
             once per ``augment_on`` place; validation off. A few warm-up steps are checked for host
             syncs (``ffd.host_syncs``): anything that makes Python wait for the GPU every step.

Prints a table of images/s with the ratio (c)/(a), host syncs per step and peak GPU memory, and writes
``bench.json`` and ``bench.md`` into outputs/bench/<timestamp>/. The files are the synthetic set written as
256 px JPEGs.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra import compose
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.autograd import DeviceType

from ffd.data import synthetic as synthetic_set
from ffd.data.datamodule import default_num_workers
from ffd.data.gpu_augment import BatchAugment
from ffd.hints import suggest_keys
from ffd.models.classifier import make_adamw
from ffd.runtime import UserError, count_problem, exit_on_user_error, list_option

log = logging.getLogger("ffd.bench")

# Sizes when the config leaves them null: a real GPU measurement, or a quick look on a CPU.
GPU_DEFAULTS = {"image_size": 256, "batch_size": 128, "steps": 200, "warmup_steps": 50, "data_batches": 60}
CPU_DEFAULTS = {"image_size": 64, "batch_size": 16, "steps": 10, "warmup_steps": 3, "data_batches": 10}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_memory_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _reset_memory() -> None:
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


def _audit_overrides(cfg: DictConfig, run_dir: Path) -> list[str]:
    """HostSyncAudit over the warm-up steps just before the profiled ones, never over a timed step."""
    warmup = cfg.sizes.warmup_steps
    profiled = min(cfg.profile_steps, warmup // 2)
    steps = min(cfg.audit_steps, warmup - profiled - 1)
    if steps <= 0:
        return []
    return [
        "+callbacks.bench_syncs._target_=ffd.host_syncs.HostSyncAudit",
        f"+callbacks.bench_syncs.start_step={warmup - profiled - steps}",
        f"+callbacks.bench_syncs.steps={steps}",
        f"+callbacks.bench_syncs.result_path={run_dir / 'host_syncs.json'}",
    ]


def train_config(
    cfg: DictConfig, model: str, augment_on: str, run_dir: Path, extra: list[str] | tuple[str, ...] = ()
) -> DictConfig:
    """The ``ffd.train`` config the bench measures: the model on the bench's files, sizes and steps."""
    sizes = cfg.sizes
    overrides = [
        f"model={model}",
        f"trainer={cfg.trainer_config}",
        "data=synthetic",
        f"data.synthetic.image_size={sizes.image_size}",
        f"data.synthetic.train={cfg.files}",
        "data.synthetic.val=32",
        "data.synthetic.test=32",
        f"data.batch_size={sizes.batch_size}",
        "data.show_table=false",  # the same files each time: the settings line gives their number
        "data.augment=true",  # the synthetic set's default is none: measure the real recipe's cost
        f"data.augment_on={augment_on}",
        "++model.net.pretrained=false",  # no download; the same compute
        "model.scheduler=null",  # plateau follows val/auroc, and validation is off
        "++callbacks.finetune=null",  # the whole network trains, as in (a)
        "callbacks.model_checkpoint=null",  # no validation, so nothing to monitor
        "callbacks.latest_checkpoint=null",  # no checkpoint writing inside the timed steps
        "++trainer.enable_checkpointing=false",  # nor Lightning's own default ModelCheckpoint
        "callbacks.early_stopping=null",
        "callbacks.model_summary=null",
        "test=false",
        "trainer.max_epochs=-1",
        f"++trainer.max_steps={sizes.warmup_steps + sizes.steps}",
        "++trainer.limit_val_batches=0",
        "++trainer.num_sanity_val_steps=0",
        f"paths.output_dir={run_dir}",
        "+callbacks.bench_timer._target_=ffd.bench.StepTimer",
        f"+callbacks.bench_timer.warmup_steps={sizes.warmup_steps}",
        f"+callbacks.bench_timer.result_path={run_dir / 'timer.json'}",
        f"+callbacks.bench_timer.profile_path={run_dir.parent.parent / f'profile_{model}_c_loop.txt'}",
        *_audit_overrides(cfg, run_dir),
        *cfg.train_overrides,
        *extra,
    ]
    return compose(config_name="train", overrides=overrides)


def _autocast(precision: str) -> Any:
    """The autocast context Lightning uses for a precision setting ('bf16-mixed', '16-mixed', '32-true')."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    return torch.autocast(device, dtype=dtype) if dtype else nullcontext()


def bare_step(
    train_cfg: DictConfig, steps: int, warmup: int, profile_steps: int = 0, profile_path: Path | None = None
) -> dict[str, Any]:
    """(a): forward, loss, backward and AdamW step on random uint8 batches resident on the device."""
    _reset_memory()
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


def full_loop(train_cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """(c): ``ffd.train.train`` itself, timed by StepTimer after the warm-up steps."""
    from ffd.train import train

    _reset_memory()
    run_dir.mkdir(parents=True, exist_ok=True)
    for earlier in ("timer.json", "host_syncs.json"):  # an earlier bench's, in a fixed hydra.run.dir
        (run_dir / earlier).unlink(missing_ok=True)
    threads = torch.get_num_threads()
    try:
        train(train_cfg)
    finally:  # a CPU loader with workers leaves them cores; the next measurement gets them back
        torch.set_num_threads(threads)
    result = json.loads((run_dir / "timer.json").read_text())
    audit = run_dir / "host_syncs.json"
    if audit.is_file():
        syncs = json.loads(audit.read_text())
        result.update(host_syncs_per_step=syncs["per_step"], host_sync_sites=syncs["sites"])
    return result


def _attempt(
    results: list[dict[str, Any]], row: dict[str, Any], measure: Callable[[], dict[str, Any]]
) -> None:
    """Run one measurement; a failure is recorded in its row and the bench goes on to the next."""
    try:
        row.update(measure())
    except Exception as error:  # a GPU bench must not lose the figures already taken
        log.exception("%s / %s failed", row["model"], row["part"])
        while error.__cause__ is not None:  # Hydra's "Error in call to target": the cause says why
            error = error.__cause__
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    output_dir = row.pop("_output_dir", None)
    results.append(row)
    outcome = ", ".join(filter(None, (rate(row) or "failed", note(row))))
    log.info("%s, %s: %s", row["model"], measurement(row), outcome)
    if output_dir:  # keep what was measured if a later part dies
        (output_dir / "bench.json").write_text(json.dumps({"machine": machine(), "rows": results}, indent=2))


# What a step variant sets (with_settings' arguments).
STEP_SETTINGS = ("precision", "channels_last", "compile")


def with_settings(
    train_cfg: DictConfig, precision: str, channels_last: bool, compile: bool | dict[str, Any]
) -> DictConfig:
    """A copy of the config with other precision / memory layout / compile settings (a step variant)."""
    variant = train_cfg.copy()
    OmegaConf.set_struct(variant, False)
    variant.trainer.precision = precision
    speed = {"_target_": "ffd.callbacks.speed.SpeedUps", "channels_last": channels_last, "compile": compile}
    variant.callbacks.speed = speed
    return variant


def settings_of(train_cfg: DictConfig) -> dict[str, Any]:
    speed = train_cfg.callbacks.get("speed") or {}
    return {
        "precision": str(train_cfg.trainer.precision),
        "channels_last": bool(speed.get("channels_last", False)),
        # true, false, or the mode of a {mode: ...} mapping (reduce-overhead: CUDA graphs)
        "compile": compile.get("mode", True)
        if OmegaConf.is_dict(compile := speed.get("compile"))
        else bool(compile),
        "image_size": int(train_cfg.data.image_size),
        "batch_size": int(train_cfg.data.batch_size),
    }


def run_bench(cfg: DictConfig, output_dir: Path) -> list[dict[str, Any]]:
    """Every measurement for every model; returns the rows (also written to bench.json as they come)."""
    results: list[dict[str, Any]] = []
    steps, warmup, batches = cfg.sizes.steps, cfg.sizes.warmup_steps, cfg.sizes.data_batches
    for model in cfg.models:
        configs = {
            place: train_config(
                cfg,
                model,
                place,
                output_dir / model / f"loop_augment_{place}",
                [f"+callbacks.bench_timer.profile_steps={cfg.profile_steps if i == 0 else 0}"],
            )
            for i, place in enumerate(cfg.augment_on)
        }
        train_cfg = configs[cfg.augment_on[0]]
        place = cfg.augment_on[-1]
        variants = [  # composed now: a bad override fails before the first measurement, not after
            (
                output_dir / model / f"loop_variant{number}",
                " ".join(extra),
                train_config(
                    cfg,
                    model,
                    place,
                    output_dir / model / f"loop_variant{number}",
                    [*extra, "+callbacks.bench_timer.profile_steps=0"],
                ),
            )
            for number, extra in enumerate(cfg.loop_variants)
        ]
        synthetic_set.generate(train_cfg.data.root, **train_cfg.data.synthetic, workers=os.cpu_count() or 1)
        base = {"model": model, **settings_of(train_cfg), "_output_dir": output_dir}
        if "step" in cfg.parts:
            profile = output_dir / f"profile_{model}_a_step.txt" if cfg.profile_steps else None
            measure = partial(bare_step, train_cfg, steps, warmup, cfg.profile_steps, profile)
            _attempt(results, {**base, "part": "a_step"}, measure)
            for variant in cfg.step_variants:
                variant_cfg = with_settings(train_cfg, **variant)
                row = {**base, **settings_of(variant_cfg), "part": "a_step_variant"}
                _attempt(results, row, partial(bare_step, variant_cfg, steps, warmup))
        if "data" in cfg.parts:
            for place, place_cfg in configs.items():
                row = {**base, "part": "b_data", "augment_on": place}
                _attempt(results, row, partial(data_pipeline, place_cfg, batches, warmup))
            if "gpu" in configs:
                _attempt(results, {**base, "part": "b_gpu_augment"}, partial(gpu_augment, train_cfg, batches))
        if "loop" in cfg.parts:
            for place, place_cfg in configs.items():
                run_dir = output_dir / model / f"loop_augment_{place}"
                row = {**base, "part": "c_loop", "augment_on": place}
                _attempt(results, row, partial(full_loop, place_cfg, run_dir))
            for run_dir, name, variant_cfg in variants:
                row = {**base, **settings_of(variant_cfg), "part": "c_loop", "augment_on": place}
                row["variant"] = name
                _attempt(results, row, partial(full_loop, variant_cfg, run_dir))
    return results


def machine() -> dict[str, Any]:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loader_workers": default_num_workers(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _settings_key(r: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("precision", "channels_last", "compile", "image_size", "batch_size")
    return r["model"], *(r.get(key) for key in keys)


PART_NAMES = {
    "a_step": "(a) bare step",
    "a_step_variant": "(a) bare step, {precision}, channels_last={channels_last}, compile={compile}",
    "b_data": "(b) data pipeline, augment on {augment_on}",
    "b_gpu_augment": "(b) GPU augmentation alone (BatchAugment)",
    "c_loop": "(c) full ffd.train loop, augment on {augment_on}{variant}",
}


def measurement(r: dict[str, Any]) -> str:
    """What a row measured, in words."""
    return PART_NAMES[r["part"]].format(**{**r, "variant": f", {r['variant']}" if r.get("variant") else ""})


def rate(r: dict[str, Any], unit: str = " images/s") -> str:
    """A row's images/s, with the digits a slow rate needs; empty for a failed row."""
    speed = r.get("images_per_s")
    if speed is None:
        return ""
    return (f"{speed:,.0f}" if speed >= 10 else f"{speed:.2g}") + unit


def note(r: dict[str, Any]) -> str:
    """A failed row's error, or the loader workers of a data pipeline row."""
    if "error" in r:
        return r["error"]
    if "workers" in r:
        return f"{r['workers']} loader worker{'' if r['workers'] == 1 else 's'}"
    return ""


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """One line per measurement: model, what, images/s, (c)/(a), syncs/step, peak GiB, note. A loop's (a)
    is the latest bare step measured before it with the same precision, channels_last, compile, image
    size and batch size; failing that, the model's default bare step, which the note then says."""
    default_step: dict[str, float | None] = {}
    same_settings: dict[tuple[Any, ...], float | None] = {}
    rows = []
    for r in results:  # in order: with models=[vit, vit] each loop meets its own run's bare step
        speed = r.get("images_per_s")
        if r["part"] == "a_step":
            default_step[r["model"]] = speed
        if r["part"] in ("a_step", "a_step_variant"):
            same_settings[_settings_key(r)] = speed
        step = same_settings.get(_settings_key(r))
        remark = note(r)
        if r["part"] == "c_loop" and not step and (step := default_step.get(r["model"])):
            remark = remark or "(a): the default bare step, other settings"
        ratio = f"{speed / step:.2f}" if r["part"] == "c_loop" and speed and step else ""
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else ""
        syncs = f"{r['host_syncs_per_step']:.2g}" if r.get("host_syncs_per_step") is not None else ""
        rows.append(
            [
                r["model"],
                measurement(r),
                "failed" if speed is None else rate(r, unit=""),
                ratio,
                syncs,
                peak,
                remark,
            ]
        )
    return rows


HEADER = ["model", "measurement", "images/s", "(c)/(a)", "syncs/step", "peak GiB", "note"]
NUMERIC = ("images/s", "(c)/(a)", "syncs/step", "peak GiB")


def sync_lines(results: list[dict[str, Any]]) -> list[str]:
    """Where the host syncs of each (c) run come from, one line per call site."""
    lines = []
    for r in results:
        for site in r.get("host_sync_sites") or ():
            place = f"augment on {r.get('augment_on')}" + (f", {r['variant']}" if r.get("variant") else "")
            lines.append(
                f"- {r['model']}, {place}: {site['per_step']:.2g}/step `{site['op']}` at {site['site']}"
                + (f": {site['why']}" if site.get("why") else "")
            )
    return lines


def write_tables(results: list[dict[str, Any]], output_dir: Path, title: str, settings: str) -> None:
    """The table on the console and in bench.md, which also keeps the settings: a results file read
    later says what was measured."""
    rows = table_rows(results)
    table = Table(title=title)
    for column in HEADER:
        table.add_column(column, justify="right" if column in NUMERIC else "left")
    for row in rows:
        table.add_row(*row)
    console = Console(width=160)
    console.print(table)
    syncs = sync_lines(results)
    if syncs:
        console.print("Host syncs in the training loop (ffd.host_syncs):", *syncs, sep="\n", markup=False)
    lines = [
        title,
        "",
        f"Settings: `{settings}`",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if syncs:
        lines += ["", "Host syncs in the training loop (ffd.host_syncs):", "", *syncs]
    (output_dir / "bench.md").write_text("\n".join(lines) + "\n")


def resolve_sizes(cfg: DictConfig) -> None:
    """Check the list options; fill the null sizes and the trainer from the device present."""
    cfg.models = list_option(cfg, "models", ("densenet", "vit"))
    cfg.parts = list_option(cfg, "parts", ("step", "data", "loop"))
    cfg.augment_on = list_option(cfg, "augment_on", ("cpu", "gpu"))
    defaults = GPU_DEFAULTS if torch.cuda.is_available() else CPU_DEFAULTS
    cfg.sizes = {key: cfg.get(key) if cfg.get(key) is not None else value for key, value in defaults.items()}
    least = {"steps": 1, "warmup_steps": 0, "batch_size": 1, "data_batches": 1}
    counts = [(cfg.sizes[key], key, minimum) for key, minimum in least.items()]
    counts += [(cfg.get(key), key, 0) for key in ("profile_steps", "audit_steps")]
    if cfg.files is not None:
        counts.append((cfg.files, "files", 2))  # one image of each class
    problems = [problem for count in counts if (problem := count_problem(*count))]
    if problems:
        raise UserError("; ".join(problems) + ".")
    if cfg.trainer_config is None:
        cfg.trainer_config = "gpu" if torch.cuda.is_available() else "cpu"
    if cfg.trainer_config == "gpu" and not torch.cuda.is_available():
        raise UserError(
            f"trainer_config={cfg.trainer_config} needs a CUDA GPU, and torch sees none: leave "
            "trainer_config out (it follows the device present) or pass trainer_config=cpu."
        )
    for variant in cfg.step_variants:
        if not OmegaConf.is_dict(variant) or set(variant) != set(STEP_SETTINGS):
            raise UserError(
                f"step_variants entry {variant} must set exactly {', '.join(STEP_SETTINGS)}, e.g. "
                "'step_variants=[{precision:32-true,channels_last:false,compile:false}]'."
            )
    if cfg.files is None:
        # One epoch holds every step: an epoch boundary restarts the loader from empty queues, which a
        # Kaggle epoch (781 steps at batch 128) pays once but a short bench epoch would pay often.
        cfg.files = cfg.sizes.batch_size * (cfg.sizes.warmup_steps + cfg.sizes.steps + 1)


def _flat(value: Any) -> str:
    """A config value as it is written on the command line: [a,b], {key:value}, null, true."""
    if isinstance(value, list):
        return "[" + ",".join(_flat(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_flat(item)}" for key, item in value.items()) + "}"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def settings_line(cfg: DictConfig) -> str:
    """The bench's options as one line of key=value, the null sizes as resolve_sizes filled them in."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings.update(settings.pop("sizes"))
    for key in ("task_name", "paths"):  # the output folder is named at the end
        settings.pop(key, None)
    return " ".join(f"{key}={_flat(value)}" for key, value in settings.items())


@suggest_keys("bench")
@hydra.main(version_base="1.3", config_path="conf", config_name="bench")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    OmegaConf.set_struct(cfg, False)
    resolve_sizes(cfg)
    output_dir = Path(cfg.paths.output_dir)
    settings = settings_line(cfg)
    log.info("Bench settings: %s", settings)
    results = run_bench(cfg, output_dir)
    info = machine()
    device = info.get("gpu") or f"{info['cpus']} CPU cores ({info['cpu']})"
    sizes = cfg.sizes
    title = (
        f"ffd.bench on {device}, torch {info['torch']}: {sizes.image_size} px, batch {sizes.batch_size}, "
        f"{sizes.steps} timed steps after {sizes.warmup_steps}, {cfg.files} JPEG files, "
        f"trainer={cfg.trainer_config}"
    )
    write_tables(results, output_dir, title, settings)
    print(f"\nbench.json and bench.md in {output_dir}")


if __name__ == "__main__":
    main()
