"""A sweep (-m) ends with one table of its jobs and summary.csv; a job that failed on its input is a row
there and exit code 1, not Hydra's traceback."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from cli import TINY_DATA, run_ffd
from ffd.errors import UserError
from ffd.sweep import SUMMARY, SweepSummary, without_common_folders

GOOD = {
    "loss": 0.2,
    "accuracy": 0.9,
    "precision": 0.8,
    "recall": 1.0,
    "f1": 0.89,
    "auroc": 0.95,
    "auprc": 0.9,
}
# Another generator's fakes alone: no ranking of fakes above reals, so AUROC and AUPRC are null.
FAKES_ONLY = {**GOOD, "precision": 1.0, "auroc": None, "auprc": None}


def end_job(
    callback: SweepSummary,
    sweep: Path,
    num: int,
    overrides: list[str],
    *,
    metrics: dict[str, Any] | None = None,
    error: Exception | None = None,
    writes_reports: bool = True,
) -> JobReturn:
    """A hand-made job folder, ended as Hydra ends a job: ``on_job_end`` with its JobReturn."""
    folder = sweep / str(num)
    (folder / "report").mkdir(parents=True, exist_ok=True)
    if metrics is not None:
        summary = {"metrics": metrics, "counts": {"images": 40 + num}}
        (folder / "report" / "metrics.json").write_text(json.dumps(summary))
    config = OmegaConf.create(
        {
            "hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(folder)}, "job": {"num": num}},
            "callbacks": {"report": {"output_dir": str(folder / "report")}} if writes_reports else {},
        }
    )
    job = JobReturn(overrides=overrides, status=JobStatus.FAILED if error else JobStatus.COMPLETED)
    job.return_value = error or 0.9
    callback.on_job_end(config, job)
    return job


def end_sweep(callback: SweepSummary, sweep: Path) -> None:
    callback.on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}, "job": {"name": "eval"}}})
    )


def start_sweep(sweep: Path) -> SweepSummary:
    callback = SweepSummary()
    callback.on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    return callback


def test_the_table_compares_the_jobs_and_says_which_failed_and_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    callback = start_sweep(tmp_path)
    message = "data.root=/sets/gone does not exist. Pass data.root=PATH to a folder of images."
    for num, (root, outcome) in enumerate(
        [
            ("sg3", {"metrics": GOOD}),
            ("ldm", {"metrics": FAKES_ONLY}),
            ("gone", {"error": UserError(message)}),
            ("empty", {}),  # the run wrote no report (a training run with test=false)
        ]
    ):
        end_job(callback, tmp_path, num, ["ckpt_path=a.ckpt", f"data.root=/sets/{root}"], **outcome)
    with pytest.raises(SystemExit) as stop:
        end_sweep(callback, tmp_path)
    assert stop.value.code == 1

    out, err = capsys.readouterr()
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 2}
    assert set(rows) == {"0", "1", "2", "3"}
    assert "ckpt_path" not in out  # the same in every job: nothing to compare
    assert "…/sg3" in rows["0"] and "0.9500" in rows["0"] and " ok " in rows["0"]
    assert rows["1"].count("n/a") == 2  # AUROC and AUPRC
    assert "failed: data.root=/sets/gone does not exist." in rows["2"] and "Pass" not in rows["2"]
    assert "no report" in rows["3"]
    assert str(tmp_path / SUMMARY) in out
    assert "1 of 4 jobs failed" in err and "python -m ffd.eval ckpt_path=a.ckpt data.root=/sets/gone" in err

    with (tmp_path / SUMMARY).open() as handle:
        table = {row["job"]: row for row in csv.DictReader(handle)}
    assert table["0"]["data.root"] == "/sets/sg3" and float(table["0"]["auroc"]) == GOOD["auroc"]
    assert table["0"]["images"] == "40" and table["1"]["auroc"] == "" and table["1"]["status"] == "ok"
    assert (table["2"]["status"], table["2"]["error"]) == ("failed", message)
    assert table["3"]["status"] == "no report" and "ckpt_path" not in table["0"]


def test_a_user_error_reaches_the_table_but_a_bug_keeps_its_traceback(tmp_path):
    """Hydra's basic sweeper raises a failed job's exception, with a traceback, before the sweep's end."""
    callback = start_sweep(tmp_path)
    user_error = end_job(callback, tmp_path, 0, ["seed=1"], error=UserError("seed=1 is bad."))
    assert user_error.status == JobStatus.COMPLETED and user_error.return_value is None
    bug = end_job(callback, tmp_path, 1, ["seed=2"], error=RuntimeError("a bug"))
    assert bug.status == JobStatus.FAILED and not (tmp_path / "1" / "outcome.json").exists()


def test_a_sweep_without_reports_or_failures_prints_nothing(tmp_path, capsys):
    """ffd.predict, ffd.export...: a table of 'ok' rows would tell nothing Hydra's job list does not."""
    callback = start_sweep(tmp_path)
    for num in range(2):
        end_job(callback, tmp_path, num, [f"input=photos{num}"], writes_reports=False)
    end_sweep(callback, tmp_path)
    assert capsys.readouterr().out == "" and not (tmp_path / SUMMARY).exists()


def test_an_earlier_sweep_into_the_same_folder_is_left_out(tmp_path):
    earlier = start_sweep(tmp_path)
    for num in range(3):
        end_job(earlier, tmp_path, num, [f"seed={num}"], metrics=GOOD)
    callback = start_sweep(tmp_path)
    end_job(callback, tmp_path, 0, ["seed=7"], metrics=GOOD)
    end_sweep(callback, tmp_path)
    with (tmp_path / SUMMARY).open() as handle:
        assert [row["job"] for row in csv.DictReader(handle)] == ["0"]


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        (["/sets/sg3", "/sets/ldm"], ["…/sg3", "…/ldm"]),
        (["runs/a/last.ckpt", "runs/b/last.ckpt"], ["…/a/last.ckpt", "…/b/last.ckpt"]),
        (["/missing.ckpt", "/tmp/x/last.ckpt"], ["/missing.ckpt", "/tmp/x/last.ckpt"]),  # only "/" shared
        (["1e-3", "3e-4"], ["1e-3", "3e-4"]),
    ],
)
def test_override_values_lose_the_folders_they_share(values, shown):
    assert without_common_folders(values) == shown


def test_a_sweep_with_a_missing_checkpoint_ends_with_the_table_and_exit_1(tiny_checkpoints, tmp_path):
    checkpoint = tiny_checkpoints["densenet"]
    missing = tmp_path / "missing.ckpt"
    result = run_ffd(
        "ffd.eval", "-m", f"ckpt_path={checkpoint},{missing}", *TINY_DATA, root=tmp_path, expect_ok=False
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"ffd: error: Checkpoint {missing} does not exist" in result.stderr
    (summary,) = (tmp_path / "outputs" / "eval" / "multirun").glob(f"*/{SUMMARY}")
    with summary.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["ckpt_path"], row["status"]) for row in rows] == [
        (str(checkpoint), "ok"),
        (str(missing), "failed"),
    ]
    report = json.loads(Path(rows[0]["report"]).read_text())
    assert int(rows[0]["images"]) == report["counts"]["images"]
    assert float(rows[0]["auroc"]) == report["metrics"]["auroc"]
    assert "failed: Checkpoint" in result.stdout and str(summary) in result.stdout
