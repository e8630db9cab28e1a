"""How ffd.export shows what it measured: the console's parity and latency table, one line per file for the
run's log (a limit in words), and the machine the figures come from. Kept apart from the export itself
(ffd.deploy.pipeline), which only computes the rows."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from ffd import record
from ffd.deploy.parity import QUALITY, REFERENCE


def label(name: str) -> str:
    """A result row's name for people: the reference or the file's precision."""
    return "torch fp32" if name == REFERENCE else f"onnx {name}"


def per_image_ms(timing: Mapping[str, float], batch: int) -> str:
    """Median and min ms per image, as 'median (min)': a busy machine's median can be several times what it
    gives unloaded (PyTorch eager most of all), which the min shows."""
    return f"{timing['median'] / batch:.1f} ({timing['min'] / batch:.1f})"


def print_table(
    console: Console, rows: dict[str, dict[str, Any]], images: int, threshold: float, batch_sizes: list[int]
) -> None:
    table = Table(
        title=f"ffd.export: parity on {images} test images, verdicts at threshold {threshold:g}; "
        "latency: CPU, ms per image at batch n, median (min)"
    )
    columns = ["model", "MB", "max ΔP", "mean ΔP", "acc", "AUROC", "AUPRC", "verdicts changed"]
    columns += [f"b{n} ms" for n in batch_sizes] + ["limit"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "limit") else "right")
    for name, row in rows.items():
        limit = row.get("limit")
        verdict = "" if limit is None else ("[green]ok[/]" if limit["ok"] else "[red]FAILED[/]")
        table.add_row(
            label(name),
            "" if row["size_bytes"] is None else f"{row['size_bytes'] / 1e6:.1f}",
            f"{row['max_abs_diff']:.2e}",
            f"{row['mean_abs_diff']:.2e}",
            *(f"{row[metric]:.4f}" for metric in QUALITY),
            f"{row['verdicts_changed']} / {images}",
            *(per_image_ms(row["latency_ms"][f"batch_{n}"], n) for n in batch_sizes),
            verdict,
        )
    console.print(table)


def limit_outcome(limit: Mapping[str, Any] | None) -> str:
    """A file's limit in words, for the log. A negative AUROC drop is a gain (int8 rounding moved a few
    scores the right way), and the log says so rather than print a drop of -0.003."""
    if limit is None:
        return "none (the reference)"
    figure, value = limit["figure"], limit["value"]
    shown = f"{figure} {value:.3g}"
    if figure == "auroc_drop" and value < 0:
        shown += f" (AUROC {-value:.3g} above the checkpoint's)"
    return f"{shown}, at most {limit['max']:g}: " + ("ok" if limit["ok"] else "FAILED")


def record_results(
    rows: dict[str, dict[str, Any]],
    images: int,
    threshold: float,
    batch_sizes: list[int],
    failures: list[str],
    report: Path,
) -> None:
    """The printed table and the outcome, for the run's log file (export.log), which the console's table
    does not reach: one line per model (the checkpoint first), then passed or failed."""
    for name, row in rows.items():
        record.info(
            "ffd.export %s: %s; max |dP| %.2e, mean |dP| %.2e; accuracy %.4f, AUROC %.4f; "
            "verdicts changed at threshold %g: %d / %d; latency ms per image, median (min): %s; limit: %s",
            label(name),
            row["file"],
            row["max_abs_diff"],
            row["mean_abs_diff"],
            row["accuracy"],
            row["auroc"],
            threshold,
            row["verdicts_changed"],
            images,
            ", ".join(f"batch {n} {per_image_ms(row['latency_ms'][f'batch_{n}'], n)}" for n in batch_sizes),
            limit_outcome(row.get("limit")),
        )
    if failures:
        record.error("ffd.export failed its limits: %s; report: %s", "; ".join(failures), report)
    else:
        record.info("ffd.export passed: every file within its limit; report: %s", report)


def machine(providers: list[str]) -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": ort.__version__,
        "parity_providers": providers,
        "latency_provider": "CPUExecutionProvider",
    }
