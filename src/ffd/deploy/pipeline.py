"""What ``python -m ffd.export`` does: checkpoint -> fp32 / fp16 / int8 ONNX files -> parity, speed, limits.

The files go into the run folder as ``<model>_<size>px_<precision>.onnx`` with ``export_report.json``
beside them. The report is written before the limits are checked, so a failed export still leaves the
figures that failed it.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import track
from torch.utils.data import DataLoader, Subset

from ffd import (
    LABELS,
    resolvers,  # noqa: F401  (run(cfg) resolves ${ffd.model_cache:})
)
from ffd.assets import sha256_of
from ffd.console import table_console
from ffd.deploy.convert import convert_fp16, export_onnx, model_info
from ffd.deploy.parity import (
    REFERENCE,
    changed_verdicts,
    collect_probabilities,
    differences,
    latency,
    quality,
    torch_predictor,
)
from ffd.deploy.quantize import CALIBRATION_METHODS, quantize_int8
from ffd.deploy.results import machine, print_table, record_results
from ffd.deploy.session import PRECISIONS, OnnxDetector, default_providers
from ffd.errors import DatasetLayoutError, UserError
from ffd.models.checkpoint import load_for_run
from ffd.models.classifier import DeepfakeClassifier
from ffd.options import count_problem, flag_problem, list_option, threshold_problem
from ffd.outputs import make_output_dir, output_folder, refuse_earlier_outputs
from ffd.report import json_safe

log = logging.getLogger("ffd.export")

REPORT_NAME = "export_report.json"
# precision -> (the figure its limit applies to, the config key of the limit)
LIMITS = {
    "fp32": ("max_abs_diff", "fp32_max_abs_diff"),
    "fp16": ("max_abs_diff", "fp16_max_abs_diff"),
    "int8": ("auroc_drop", "int8_auroc_drop"),
}


class ExportConfigError(UserError):
    """An export option that cannot work (an unknown precision, method or provider, a count below 1)."""


class ExportLimitError(UserError):
    """An exported file whose parity or accuracy is outside its limit: not fit to ship."""


def file_name(model: DeepfakeClassifier, precision: str) -> str:
    return f"{model.net_name}_{model.image_size}px_{precision}.onnx"


def sample_loader(loader: DataLoader, count: int | None, seed: int) -> DataLoader:
    """The same loader over a seeded random sample of ``count`` of its images (all of them if None).

    Random, not the first ``count``: a split is stored class by class, and its head may be one class.
    """
    dataset = loader.dataset
    if count is None or count >= len(dataset):  # type: ignore[arg-type]
        return loader
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), size=count, replace=False))  # type: ignore[arg-type]
    return DataLoader(
        Subset(dataset, keep.tolist()),
        batch_size=loader.batch_size,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
    )


def gather_images(loader: DataLoader) -> np.ndarray:
    """Every readable image of the loader, uint8 (N, 3, S, S)."""
    return torch.cat([batch["image"] for batch in loader]).numpy()


def _count(value: Any, key: str, minimum: int = 1) -> int:
    """An integer option that must be at least ``minimum``, or an ExportConfigError naming it."""
    if problem := count_problem(value, f"export.{key}", minimum):
        raise ExportConfigError(f"{problem}.")
    return value


def check_options(cfg: DictConfig) -> list[str]:
    """The requested precisions, in PRECISIONS order; every option that cannot work raises
    ExportConfigError here, before any file is written."""
    settings = cfg.export
    requested = list_option(cfg, "export.precisions", PRECISIONS)
    if "int8" in requested:
        if settings.calibration.method not in CALIBRATION_METHODS:
            raise ExportConfigError(
                f"export.calibration.method={settings.calibration.method!r} is not one of "
                f"{', '.join(CALIBRATION_METHODS)}."
            )
        _count(settings.calibration.images, "calibration.images")
        _count(settings.calibration.batch_size, "calibration.batch_size")
    if settings.parity_images is not None:
        _count(settings.parity_images, "parity_images", minimum=2)  # AUROC needs both classes
    sizes = settings.latency.batch_sizes
    settings.latency.batch_sizes = [sizes] if isinstance(sizes, int) else sizes  # batch_sizes=8
    for size in settings.latency.batch_sizes:
        _count(size, "latency.batch_sizes")
    _count(settings.latency.warmup, "latency.warmup", minimum=0)
    _count(settings.latency.repeats, "latency.repeats")
    for _, key in LIMITS.values():
        bound = settings.limits.get(key)
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ExportConfigError(f"export.limits.{key}={bound!r}: must be a number.")
    if problem := threshold_problem(settings.threshold, "export.threshold"):
        raise ExportConfigError(f"{problem}.")
    if problem := flag_problem(settings.overwrite, "export.overwrite"):
        raise ExportConfigError(f"{problem}.")
    settings.threshold = float(settings.threshold)  # threshold=1 is an int, which torchmetrics refuses
    if settings.providers:
        available = ort.get_available_providers()
        unknown = [name for name in settings.providers if name not in available]
        if unknown:
            raise ExportConfigError(
                f"export.providers: {', '.join(unknown)} not available in this onnxruntime build, which has "
                f"{', '.join(available)}. Leave export.providers=null for the best available."
            )
    return [p for p in PRECISIONS if p in requested]


def write_files(
    cfg: DictConfig, model: DeepfakeClassifier, datamodule: Any, precisions: list[str], out: Path
) -> tuple[dict[str, Path], int]:
    """Export, convert and quantize: {precision: file} and the number of calibration images. fp32 is
    always made (the others come from it) and kept only if asked for."""
    checkpoint_sha256 = sha256_of(cfg.ckpt_path)
    files: dict[str, Path] = {}
    calibrated = 0
    with tempfile.TemporaryDirectory(prefix="ffd-export-") as scratch:
        fp32_dir = out if "fp32" in precisions else Path(scratch)
        log.info("Exporting %s to ONNX with torch.export (up to a minute on a CPU)", model.net_name)
        fp32 = export_onnx(model, fp32_dir / file_name(model, "fp32"), checkpoint_sha256)
        if "fp32" in precisions:
            files["fp32"] = fp32
        if "fp16" in precisions:
            files["fp16"] = convert_fp16(
                fp32, out / file_name(model, "fp16"), model_info(model, checkpoint_sha256, "fp16")
            )
        if "int8" in precisions:
            calibration = cfg.export.calibration
            images = gather_images(sample_loader(datamodule.val_dataloader(), calibration.images, cfg.seed))
            log.info(
                "Quantizing to int8: %s calibration on %d validation images", calibration.method, len(images)
            )
            files["int8"] = quantize_int8(
                fp32,
                out / file_name(model, "int8"),
                model_info(model, checkpoint_sha256, "int8"),
                images,
                method=calibration.method,
                batch_size=calibration.batch_size,
            )
            calibrated = len(images)
    return files, calibrated


def measure(
    cfg: DictConfig, model: DeepfakeClassifier, datamodule: Any, files: Mapping[str, Path], console: Console
) -> tuple[dict[str, dict[str, Any]], int, list[str]]:
    """One row per model (the checkpoint first): parity, quality, size, latency; plus the number of test
    images and the providers the files ran on."""
    settings = cfg.export
    requested = list(settings.providers) if settings.providers else default_providers()
    detectors = {precision: OnnxDetector(path, providers=requested) for precision, path in files.items()}
    # What the sessions run on: onnxruntime falls back to the CPU when a provider cannot start.
    providers = list(dict.fromkeys(name for d in detectors.values() for name in d.session.get_providers()))
    predictors = {REFERENCE: torch_predictor(model.net), **detectors}
    test = sample_loader(datamodule.test_dataloader(), settings.parity_images, cfg.seed)
    labels, probs = collect_probabilities(
        predictors, track(test, description="parity on the test split", console=console, transient=True)
    )
    rows: dict[str, dict[str, Any]] = {}
    for name, prob in probs.items():
        row: dict[str, Any] = {"file": str(files[name]) if name in files else str(cfg.ckpt_path)}
        row["size_bytes"] = files[name].stat().st_size if name in files else None
        row.update(differences(probs[REFERENCE], prob))
        row.update(changed_verdicts(probs[REFERENCE], prob, settings.threshold))
        row.update(quality(labels, prob, settings.threshold))
        rows[name] = row
    for name in files:
        rows[name]["auroc_drop"] = rows[REFERENCE]["auroc"] - rows[name]["auroc"]
    timing = settings.latency
    for name in predictors:
        # Always the CPU provider: the figures compare with PyTorch eager on the same CPU.
        predict = (
            predictors[name] if name == REFERENCE else OnnxDetector(files[name], ["CPUExecutionProvider"])
        )
        rows[name]["latency_ms"] = latency(
            predict, int(model.image_size or 0), timing.batch_sizes, timing.warmup, timing.repeats
        )
    return rows, len(labels), providers


def check_limits(rows: dict[str, dict[str, Any]], limits: Mapping[str, float]) -> list[str]:
    """Mark each file's row with its limit; return one sentence per failed limit."""
    failures = []
    for precision, (figure, key) in LIMITS.items():
        if precision not in rows:
            continue
        value, bound = rows[precision][figure], float(limits[key])
        ok = bool(value <= bound)  # NaN (e.g. AUROC of a one-class set) fails: the limit cannot be shown
        rows[precision]["limit"] = {"figure": figure, "value": value, "max": bound, "ok": ok}
        if not ok:
            failures.append(f"{precision}: {figure} = {value:.6g} exceeds export.limits.{key} = {bound:g}")
    return failures


def run(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` in ``cfg.export.precisions``; return the report (also written to disk).

    Raises ExportLimitError, after writing the report, when a file is outside its limit.
    """
    console = console or table_console()
    precisions = check_options(cfg)
    out = output_folder(cfg.export.output_dir, "export.output_dir")
    model = load_for_run(cfg).eval()
    names = [file_name(model, precision) for precision in PRECISIONS] + [REPORT_NAME]
    refuse_earlier_outputs(
        out, names, cfg.export.overwrite, key="export.output_dir", overwrite_key="export.overwrite"
    )
    make_output_dir(out, key="export.output_dir")
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    if "int8" in precisions:
        try:
            datamodule.setup("validate")
        except DatasetLayoutError as error:  # e.g. a folder of another generator's faces: a test split only
            raise DatasetLayoutError(
                f"int8 needs validation images for its calibration: {error} Point data.root at a set with "
                "a valid/ folder (the training set's), or export without int8: export.precisions=[fp32,fp16]."
            ) from None
    datamodule.setup("test")

    try:
        files, calibrated = write_files(cfg, model, datamodule, precisions, out)
        rows, images, providers = measure(cfg, model, datamodule, files, console)
    except BaseException:  # Ctrl-C, SIGTERM, an error: the files written so far look like a finished export
        written = sorted(path.name for path in out.glob("*.onnx"))
        if written:
            log.error(
                "ffd.export stopped before its parity checks: %s in %s are unchecked (no %s); rerun with "
                "export.overwrite=true, or delete them",
                ", ".join(written),
                out,
                REPORT_NAME,
            )
        raise
    failures = check_limits(rows, cfg.export.limits)
    report = {
        "checkpoint": str(cfg.ckpt_path),
        "checkpoint_sha256": sha256_of(cfg.ckpt_path),
        "model": model.describe(),
        "labels": {"0": LABELS[0], "1": LABELS[1], "probability": "P(fake)"},
        "files": {precision: path.name for precision, path in files.items()},
        "parity": {
            "split": "test",
            "images": images,
            "threshold": cfg.export.threshold,
            "reference": "PyTorch eager fp32 on the CPU",
        },
        "calibration": (
            {"split": "val", **OmegaConf.to_container(cfg.export.calibration), "images_used": calibrated}  # type: ignore[dict-item]
            if "int8" in files
            else None
        ),
        "latency": {
            **OmegaConf.to_container(cfg.export.latency),
            "unit": "ms per batch: median, min and p90 of the repeats",
        },  # type: ignore[dict-item]
        "results": rows,
        "passed": not failures,
        "failures": failures,
        "data": datamodule.summary(),
        "machine": machine(providers),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / REPORT_NAME).write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    batch_sizes = list(cfg.export.latency.batch_sizes)
    print_table(console, rows, images, cfg.export.threshold, batch_sizes)
    console.print(f"Files and {REPORT_NAME} in {out}")
    record_results(rows, images, cfg.export.threshold, batch_sizes, failures, out / REPORT_NAME)
    if failures:
        raise ExportLimitError(
            "The export failed its limits, so these files are not fit to ship: "
            + "; ".join(failures)
            + f" (on {images} test images). The figures are in {out / REPORT_NAME}. Retrain, change the "
            "calibration (export.calibration.*), or relax the limit on purpose (export.limits.*)."
        )
    return report
