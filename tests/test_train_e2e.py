"""End to end, as a user runs it: `python -m ffd.train` / `ffd.eval` on a tiny generated set."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ffd.report import REPORT_FILES

# A tiny synthetic set and a tiny budget: this checks the plumbing, not the accuracy.
TINY = [
    "experiment=quickstart",
    "data.synthetic.image_size=32",
    "data.synthetic.train=24",
    "data.synthetic.val=12",
    "data.synthetic.test=12",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "callbacks.model_summary=null",
]


def run_ffd(module: str, *overrides: str, root: Path, expect_ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "FFD_ROOT": str(root), "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if expect_ok:
        assert result.returncode == 0, f"{module} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def run_dirs(root: Path, task: str) -> list[Path]:
    return sorted(p.parent for p in (root / "outputs" / task).glob("**/.hydra"))


def check_report(run_dir: Path, fitted: bool = True) -> dict:
    report = run_dir / "report"
    for name in REPORT_FILES:
        assert (report / name).is_file(), f"{name} missing in {report}"
    summary = json.loads((report / "metrics.json").read_text())
    with (report / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == summary["counts"]["images"] == 12
    correct = sum((row["verdict"] == "fake") == (row["label"] == "1") for row in rows)
    assert summary["metrics"]["accuracy"] == pytest.approx(correct / len(rows), abs=1e-6)
    assert set(summary["metrics"]) >= {"loss", "accuracy", "precision", "recall", "f1", "auroc", "auprc"}
    tags: dict[str, set[str]] = {"images": set(), "scalars": set(), "hparams": set()}
    for file in (run_dir / "tensorboard").glob("events.out.tfevents.*"):  # fit and test write one each
        events = EventAccumulator(str(file))
        events.Reload()
        tags["images"] |= set(events.Tags()["images"])
        tags["scalars"] |= set(events.Tags()["scalars"])
        with contextlib.suppress(KeyError):  # only the file written at fit start holds the hparams
            tags["hparams"] |= set(events.PluginTagToContent("hparams"))
    assert {"report/roc", "report/verdicts"} <= tags["images"]
    assert {"test/auroc", "hp_metric"} <= tags["scalars"]
    assert not fitted or {"val/auroc", "train/loss_epoch", "lr-AdamW"} <= tags["scalars"]
    assert tags["hparams"], "the composed config is missing from TensorBoard's hparams tab"
    return summary


def test_multirun_trains_both_models_then_eval_reads_a_checkpoint(tmp_path):
    run_ffd("ffd.train", "-m", *TINY, "model=densenet,vit", root=tmp_path)
    runs = run_dirs(tmp_path, "train")
    assert len(runs) == 2, runs
    names = set()
    for run in runs:
        names.add(check_report(run)["model"]["name"])
        assert (run / "checkpoints" / "last.ckpt").is_file()
    assert names == {"densenet", "vit"}

    vit_run = next(
        r for r in runs if json.loads((r / "report" / "metrics.json").read_text())["model"]["name"] == "vit"
    )
    checkpoint = vit_run / "checkpoints" / "last.ckpt"
    assert (
        torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]["net"]["name"]
        == "vit"
    )
    run_ffd(
        "ffd.eval",
        f"ckpt_path={checkpoint}",
        *[o for o in TINY if o.startswith("data.")],
        "data=synthetic",
        root=tmp_path,
    )
    (eval_run,) = run_dirs(tmp_path, "eval")
    summary = check_report(eval_run, fitted=False)
    assert summary["model"]["name"] == "vit"
    assert summary["checkpoint"] == str(checkpoint)


def test_missing_data_root_is_one_clear_error(tmp_path):
    result = run_ffd("ffd.train", "data=kaggle", "model=vit", root=tmp_path, expect_ok=False)
    assert result.returncode == 1
    assert "data.root" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [None, "not a checkpoint", {"state_dict": {}, "hyper_parameters": {}}])
def test_bad_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "model.ckpt"
    if content == "not a checkpoint":
        path.write_text(content)
    elif content is not None:
        torch.save(content, path)
    result = run_ffd("ffd.eval", f"ckpt_path={path}", "data=synthetic", root=tmp_path, expect_ok=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and "ckpt" in result.stderr and "Traceback" not in result.stderr


def test_two_process_ddp_writes_one_run_and_one_report(tmp_path):
    run_ffd(
        "ffd.train",
        *TINY,
        "model=vit",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        root=tmp_path,
    )
    runs = run_dirs(tmp_path, "train")
    assert len(runs) == 1, f"DDP made {len(runs)} run folders: {runs}"
    summary = check_report(runs[0])
    assert summary["model"]["name"] == "vit"
