"""python -m ffd.bench [models=[densenet,vit]] [image_size=256] [batch_size=128] [steps=200] [...]

Where training time goes, per model, on whatever device is present, with the settings ``ffd.train`` uses
there (``trainer=gpu`` on a GPU: bf16, channels_last, torch.compile; ``trainer=cpu`` otherwise):

  (a) step   the bare training step (forward, loss, backward, AdamW) on random uint8 batches already on the
             device: the ceiling for everything else;
  (b) data   the training data pipeline alone: read the JPEG files, decode, augment (or not, when the
             augmentation runs on the GPU), collate, pin; and the GPU augmentation alone;
  (c) loop   the full ``ffd.train`` loop (Lightning, data, metrics, logging, callbacks) on the same files,
             once per ``augment_on`` place; validation off. A few warm-up steps are checked for host
             syncs (``ffd.dev.host_syncs``): anything that makes Python wait for the GPU every step.

Prints a table of images/s with the ratio (c)/(a), host syncs per step and peak GPU memory, and writes
``bench.json`` and ``bench.md`` into outputs/bench/<timestamp>/. The files are the synthetic set written as
256 px JPEGs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from ffd.bench_measure import bare_step, data_pipeline, gpu_augment, reset_memory
from ffd.bench_table import machine, measurement, note, rate, write_tables
from ffd.data import synthetic as synthetic_set
from ffd.errors import UserError
from ffd.hints import suggest_keys
from ffd.options import count_problem, list_option
from ffd.runtime import exit_on_user_error

log = logging.getLogger("ffd.bench")

# Sizes when the config leaves them null: a real GPU measurement, or a quick look on a CPU.
GPU_DEFAULTS = {"image_size": 256, "batch_size": 128, "steps": 200, "warmup_steps": 50, "data_batches": 60}
CPU_DEFAULTS = {"image_size": 64, "batch_size": 16, "steps": 10, "warmup_steps": 3, "data_batches": 10}


def _audit_overrides(cfg: DictConfig, run_dir: Path) -> list[str]:
    """HostSyncAudit over the warm-up steps just before the profiled ones, never over a timed step."""
    warmup = cfg.sizes.warmup_steps
    profiled = min(cfg.profile_steps, warmup // 2)
    steps = min(cfg.audit_steps, warmup - profiled - 1)
    if steps <= 0:
        return []
    return [
        "+callbacks.bench_syncs._target_=ffd.dev.host_syncs.HostSyncAudit",
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
        "+callbacks.bench_timer._target_=ffd.bench_measure.StepTimer",
        f"+callbacks.bench_timer.warmup_steps={sizes.warmup_steps}",
        f"+callbacks.bench_timer.result_path={run_dir / 'timer.json'}",
        f"+callbacks.bench_timer.profile_path={run_dir.parent.parent / f'profile_{model}_c_loop.txt'}",
        *_audit_overrides(cfg, run_dir),
        *cfg.train_overrides,
        *extra,
    ]
    return compose(config_name="train", overrides=overrides)


def full_loop(train_cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """(c): ``ffd.train.train`` itself, timed by StepTimer after the warm-up steps."""
    from ffd.train import train

    reset_memory()
    run_dir.mkdir(parents=True, exist_ok=True)
    for earlier in ("timer.json", "host_syncs.json"):  # an earlier bench's, in a fixed hydra.run.dir
        (run_dir / earlier).unlink(missing_ok=True)
    threads = torch.get_num_threads()
    # The loop logs as training does, but into a folder removed afterwards: bench runs are not the user's
    # runs, and `tensorboard --logdir outputs` must not mix them into the training runs and hparams tab.
    with tempfile.TemporaryDirectory(prefix="ffd-bench-tensorboard-") as scratch, warnings.catch_warnings():
        # Short bench epochs trip Lightning's "fewer batches than log_every_n_steps": not the user's concern.
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        for logger in (train_cfg.get("logger") or {}).values():
            if logger and "save_dir" in logger:
                logger.save_dir = scratch
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
