"""The end of a Hydra sweep (``-m``): one table that compares its jobs, also written to
``<sweep dir>/summary.csv``, and a job that failed on its input shown there instead of in Hydra's traceback.

``SweepSummary`` is registered for every ffd command in conf/hydra/default.yaml. Each job records what became
of it in its own folder (``outcome.json``: its overrides, its error, where its report is) when it ends, on
whatever machine runs it; the summary reads those files when the sweep ends, so that it works with any
launcher, local or SLURM.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ffd import resolvers  # noqa: F401  (run(cfg) resolves ${ffd.model_cache:})
from ffd.console import table_console
from ffd.errors import UserError

OUTCOME = "outcome.json"
SUMMARY = "summary.csv"
# ffd.eval robustness=default: each job's robustness.json (in its folder), compared curve by curve.
ROBUSTNESS = "robustness.json"
ROBUSTNESS_SUMMARY = "robustness_summary.csv"
# (column title, key in metrics.json's "metrics"): what tells a detector apart at a glance.
METRICS = (("accuracy", "accuracy"), ("AUROC", "auroc"), ("AUPRC", "auprc"), ("F1", "f1"))


@dataclass
class Job:
    """One job of a sweep, as its folder tells it."""

    num: int
    folder: Path
    overrides: list[str]  # as given, e.g. data.root=/sets/sg3
    error: str | None
    report: Path | None  # its metrics.json; None for a command that writes no report
    summary: dict[str, Any] | None  # metrics.json's content, when it is there
    objective: float | None = None  # what the job returned to the sweeper (ffd.train: best val AUROC)

    @property
    def settings(self) -> dict[str, str]:
        """{key: value} of its overrides."""
        return {key: value for key, _, value in (line.partition("=") for line in self.overrides)}

    @property
    def status(self) -> str:
        if self.error is not None:
            return "failed"
        return "no report" if self.report is not None and self.summary is None else "ok"


def write_outcome(
    folder: Path,
    sweep: str,
    num: int,
    overrides: list[str],
    error: str | None,
    report: Path | None,
    objective: float | None = None,
) -> None:
    """Record how job ``num`` of sweep ``sweep`` (an id) ended, in its folder. Written whole, then renamed:
    each process of a multi-node job ends the same job."""
    outcome = {
        "sweep": sweep,
        "job": num,
        "overrides": overrides,
        "error": error,
        "report": str(report) if report else None,
        "objective": objective,
    }
    partial = folder / f".{OUTCOME}.{os.getpid()}"
    partial.write_text(json.dumps(outcome, indent=2) + "\n")
    partial.replace(folder / OUTCOME)


def read_jobs(sweep_dir: Path, sweep: str) -> list[Job]:
    """The jobs of sweep ``sweep`` under ``sweep_dir``, by job number; not those of an earlier sweep into
    the same folder (a ``hydra.sweep.dir`` used again)."""
    jobs = []
    for path in sweep_dir.rglob(OUTCOME):
        outcome = json.loads(path.read_text())
        if outcome["sweep"] != sweep:
            continue
        report = Path(outcome["report"]) if outcome["report"] else None
        summary = None
        if outcome["error"] is None and report is not None and report.is_file():
            summary = json.loads(report.read_text())
        jobs.append(
            Job(
                outcome["job"],
                path.parent,
                outcome["overrides"],
                outcome["error"],
                report,
                summary,
                outcome.get("objective"),
            )
        )
    return sorted(jobs, key=lambda job: job.num)


def varying_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose value is not the same in every job, in command-line order: what tells the
    jobs apart."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.settings))
    return [key for key in keys if len({job.settings.get(key) for job in jobs}) > 1]


def without_common_folders(values: list[str]) -> list[str]:
    """Paths with the folders they all start with as '…/' (``/sets/sg3``, ``/sets/ldm`` -> ``…/sg3``,
    ``…/ldm``), which leaves what differs in view; other values as they are."""
    parts = [value.split("/") for value in values]
    common = 0
    while all(len(part) > common + 1 for part in parts) and len({part[common] for part in parts}) == 1:
        common += 1
    if len(set(values)) < 2 or common == 0 or (common == 1 and parts[0][0] == ""):  # none, or only "/"
        return values
    return ["…/" + "/".join(part[common:]) for part in parts]


def column_titles(keys: list[str]) -> list[str]:
    """Each override key by its last part (``model.optimizer.lr`` -> ``lr``) when that names it alone, so
    that a search's columns fit a terminal; the whole key otherwise."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last, strict=True)]


def shown_value(value: str) -> str:
    """A sampled float (``0.00035747129226``) with 4 significant digits for the table; others as given."""
    if re.fullmatch(r"-?\d*\.\d{5,}(e-?\d+)?|-?\d+(\.\d+)?e-?\d+", value):
        return f"{float(value):.4g}"
    return value


def first_sentence(message: str, width: int = 100) -> str:
    """The first sentence of an error paragraph, for a table cell, cut in the middle if long (a path's end
    and the verb after it say the most); the CSV and the job's log have all of it."""
    sentence = re.split(r"(?<=\.)\s", message.strip(), maxsplit=1)[0]
    if len(sentence) <= width:
        return sentence
    keep = width - 1
    return sentence[: keep - keep // 2] + "…" + sentence[-(keep // 2) :]


def _headline(job: Job) -> list[float | None] | None:
    """The image count and METRICS of the job's report (None for a null metric); None without a report."""
    if job.summary is None:
        return None
    return [job.summary["counts"]["images"], *(job.summary["metrics"].get(key) for _, key in METRICS)]


def summary_table(jobs: list[Job], objective: str | None = None) -> Table:
    """A row per job: its number, the overrides that vary, what it returned to the sweeper (titled
    ``objective``, when given), the report's headline numbers (null as n/a) and whether it ran."""
    keys = varying_keys(jobs)
    with_reports = any(job.summary is not None for job in jobs)
    scored = objective is not None and any(job.objective is not None for job in jobs)
    best = max((job.objective for job in jobs if job.objective is not None), default=None)
    table = Table(title=f"Sweep of {len(jobs)} job{'s' * (len(jobs) != 1)}")
    table.add_column("job", justify="right")
    for title in column_titles(keys):
        table.add_column(title, overflow="fold")
    if scored:
        table.add_column(objective, justify="right")
    if with_reports:
        table.add_column("images", justify="right")
        for title, _ in METRICS:
            table.add_column(title, justify="right")
    table.add_column("status")
    values = [
        without_common_folders([shown_value(job.settings.get(key, "")) for job in jobs]) for key in keys
    ]
    for row, job in enumerate(jobs):
        cells = [str(job.num), *(column[row] for column in values)]
        if scored:
            mark = " *" if job.objective is not None and job.objective == best else ""
            cells.append("" if job.objective is None else f"{job.objective:.4f}{mark}")
        if with_reports:
            numbers = _headline(job)
            if numbers is None:
                cells += [""] * (1 + len(METRICS))
            else:
                cells += [str(numbers[0]), *("n/a" if x is None else f"{x:.4f}" for x in numbers[1:])]
        status = f"failed: {first_sentence(job.error)}" if job.error is not None else job.status
        style = {"ok": "green", "no report": "yellow"}.get(job.status, "red")
        table.add_row(*(Text(cell) for cell in cells), Text(status, style=style))  # Text: no markup
    return table


def write_summary_csv(path: Path, jobs: list[Job]) -> None:
    """The table as CSV: whole override values, full-precision metrics (empty for null), whole errors."""
    keys = varying_keys(jobs)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["job", *keys, "objective", "images", *(key for _, key in METRICS), "status", "error", "report"]
        )
        for job in jobs:
            numbers = _headline(job) or [None] * (1 + len(METRICS))
            writer.writerow(
                [
                    job.num,
                    *(job.settings.get(key, "") for key in keys),
                    "" if job.objective is None else repr(job.objective),
                    *("" if x is None else repr(x) for x in numbers),
                    job.status,
                    job.error or "",
                    job.report if job.summary is not None else "",
                ]
            )


def robustness_areas(jobs: list[Job]) -> dict[int, dict[str, Any]]:
    """{job number: its robustness.json's clean AUROC and mean AUROC per perturbation} for the jobs that
    wrote one; a sweep of ffd.eval robustness=default compares its models by these."""
    areas = {}
    for job in jobs:
        path = job.folder / ROBUSTNESS
        if job.error is None and path.is_file():
            result = json.loads(path.read_text())
            clean = next(row["auroc"] for row in result["rows"] if row["perturbation"] == "clean")
            areas[job.num] = {"clean": clean} | {
                name: area["auroc"] for name, area in result["curve_areas"].items()
            }
    return areas


def robustness_table(jobs: list[Job], areas: dict[int, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and rows comparing the jobs' robustness curves: the overrides that vary, the clean
    AUROC, then each perturbation's mean AUROC over its severities (empty for null)."""
    keys = varying_keys(jobs)
    names = list(dict.fromkeys(name for job_areas in areas.values() for name in job_areas))
    measured = [job for job in jobs if job.num in areas]
    values = [without_common_folders([job.settings.get(key, "") for job in measured]) for key in keys]
    rows = [
        [str(job.num), *(column[row] for column in values)]
        + ["" if areas[job.num].get(name) is None else f"{areas[job.num][name]:.4f}" for name in names]
        for row, job in enumerate(measured)
    ]
    return ["job", *keys, *(f"{name} AUROC" for name in names)], rows


def print_robustness(
    console: Console, sweep_dir: Path, jobs: list[Job], areas: dict[int, dict[str, Any]]
) -> None:
    """Print the robustness comparison and write it to robustness_summary.csv."""
    header, rows = robustness_table(jobs, areas)
    table = Table(title="Robustness: clean AUROC and mean AUROC over each perturbation's severities")
    for column in header:
        table.add_column(column, justify="right" if column.endswith("AUROC") or column == "job" else "left")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    with (sweep_dir / ROBUSTNESS_SUMMARY).open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    console.print(f"Robustness summary written to [bold]{escape(str(sweep_dir / ROBUSTNESS_SUMMARY))}[/bold]")


def rerun_command(command: str, job: Job) -> str:
    """The command line that runs ``job`` of an ``ffd.<command>`` sweep alone."""
    return shlex.join(["python", "-m", f"ffd.{command}", *job.overrides])


class SweepSummary(Callback):
    """Hydra callback: every job of a sweep records its outcome; the sweep ends with the table of them.

    A job that failed on the user's input (``ffd.errors.UserError``, its ``ffd: error:`` already printed)
    is handed back to the sweeper as one that returned None: Hydra's basic sweeper would otherwise end the
    sweep with a traceback of it, before this summary. Optuna counts a None as a failed trial, as it did
    the error. The sweep still exits 1, after the table. A bug keeps its traceback."""

    def __init__(self) -> None:
        self.sweep = ""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Before the launcher starts: a remote launcher (SLURM) takes this callback, id included, to the jobs.
        self.sweep = uuid.uuid4().hex

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.mode") != RunMode.MULTIRUN:
            return
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None  # `return_value` raises it
        if failed and not isinstance(error, UserError):
            return  # a bug: Hydra shows its traceback
        folder = Path(config.hydra.runtime.output_dir)
        report = OmegaConf.select(config, "callbacks.report.output_dir")
        returned = None if failed else job_return.return_value
        write_outcome(
            folder,
            self.sweep,
            config.hydra.job.num,
            list(job_return.overrides or []),
            str(error) if error is not None else None,
            Path(report) / "metrics.json" if report else None,
            float(returned) if isinstance(returned, int | float) else None,
        )
        if failed:  # only once recorded: a failure the summary could not show stays Hydra's
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Print the table and write summary.csv, unless no job wrote a report or failed (ffd.predict,
        ffd.export...: Hydra listed the jobs at launch and each printed where its output went); exit 1 if a
        job failed."""
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = read_jobs(sweep_dir, self.sweep)
        failed = [job for job in jobs if job.error is not None]
        areas = robustness_areas(jobs)
        if not failed and not areas and all(job.summary is None for job in jobs):
            return
        console = table_console()
        # ffd.train returns its tested epoch's validation AUROC, which a search maximises (* the best)
        objective = "val AUROC" if config.hydra.job.name == "train" else None
        console.print(summary_table(jobs, objective))
        write_summary_csv(sweep_dir / SUMMARY, jobs)
        console.print(f"Sweep summary written to [bold]{escape(str(sweep_dir / SUMMARY))}[/bold]")
        if areas:
            print_robustness(console, sweep_dir, jobs, areas)
        if failed:
            reruns = [
                f"  {rerun_command(config.hydra.job.name, job)}    # job {job.num}: {job.folder}"
                for job in failed
            ]
            print(
                f"\nffd: error: {len(failed)} of {len(jobs)} jobs failed; the table above says why, and the "
                "log in each job's folder has the whole message. Fix what it names, then run the job again "
                "alone:",
                *reruns,
                sep="\n",
                file=sys.stderr,
            )
            raise SystemExit(1)  # Hydra turns a callback's Exception into a warning, never SystemExit
