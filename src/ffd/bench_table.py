"""The bench's results as a table: one row per measurement with its images/s, the loop's share of the bare
step ((c)/(a)), host syncs and peak memory, on the console and in ``bench.md``."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from rich.console import Console
from rich.table import Table

from ffd.data.workers import default_num_workers


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
        console.print("Host syncs in the training loop (ffd.dev.host_syncs):", *syncs, sep="\n", markup=False)
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
        lines += ["", "Host syncs in the training loop (ffd.dev.host_syncs):", "", *syncs]
    (output_dir / "bench.md").write_text("\n".join(lines) + "\n")
