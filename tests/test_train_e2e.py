"""End to end, as a user runs it: `python -m ffd.train` / `ffd.eval` on a tiny generated set."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data.distributed import DistributedSampler

from cli import TINY, TINY_DATA, run_dirs, run_ffd, run_in_process
from ffd.data.index import index_dataset
from ffd.data.synthetic import generate
from ffd.report import REPORT_FILES


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
    assert not fitted or {"val/auroc", "train/loss_epoch", "lr-AdamW/from_start"} <= tags["scalars"]
    assert tags["hparams"], "the composed config is missing from TensorBoard's hparams tab"
    return summary


def test_multirun_trains_both_models_then_eval_reads_a_checkpoint(tiny_runs, tmp_path):
    assert set(tiny_runs) == {"densenet", "vit"}
    for run in tiny_runs.values():
        summary = check_report(run)
        assert (run / "checkpoints" / "last.ckpt").is_file()
        # The run's log has Lightning's messages and, once each, the dataset and the test report.
        log = (run / "train.log").read_text()
        assert "Seed set to 42" in log and "Epoch 0, global step 3: 'val/auroc' reached" in log
        assert log.count("Dataset ") == 1 and "train 12 real, 12 fake, 0 skipped" in log
        assert log.count("Test report: 12 images (6 real, 6 fake)") == 1
        assert json.dumps(summary["metrics"]["auroc"]) in log
        assert "GPU available" in log and "💡 Tip" not in log  # Lightning's messages, not its adverts

    checkpoint = tiny_runs["vit"] / "checkpoints" / "last.ckpt"
    assert (
        torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]["net"]["name"]
        == "vit"
    )
    run_ffd(
        "ffd.eval",
        f"ckpt_path={checkpoint}",
        *TINY_DATA,
        root=tmp_path,
    )
    (eval_run,) = run_dirs(tmp_path, "eval")
    summary = check_report(eval_run, fitted=False)
    assert summary["model"]["name"] == "vit"
    assert summary["checkpoint"] == str(checkpoint)


def test_eval_on_the_synthetic_set_draws_it_at_the_checkpoints_size(tiny_checkpoints, tmp_path):
    """A 32 px model evaluated with data=synthetic (64 px by default): the set is made at 32 px, since
    resizing a 64 px one would erase the upsampling trace its fakes carry."""
    counts = [o for o in TINY_DATA if o.startswith("data.synthetic.") and "image_size" not in o]
    result = run_in_process(
        "ffd.eval", f"ckpt_path={tiny_checkpoints['vit']}", "data=synthetic", *counts, root=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_dirs(tmp_path, "eval")
    data = json.loads((run / "report" / "metrics.json").read_text())["data"]
    assert data["image_size"] == 32 and Path(data["root"]).name.startswith("s32_"), data


def test_eval_with_no_readable_test_image_says_so_and_lists_them(tiny_checkpoints, tmp_path):
    data = generate(tmp_path / "data" / "synthetic" / "s32_24-12-12_seed0", 32, 24, 12, 12, progress=False)
    for path, _ in index_dataset(data).samples["test"]:
        Path(path).write_bytes(Path(path).read_bytes()[:40])  # the JPEG header kept: found, not decodable
    result = run_in_process("ffd.eval", f"ckpt_path={tiny_checkpoints['vit']}", *TINY_DATA, root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "No test image could be read" in result.stderr, result.stderr[-2000:]
    (run,) = run_dirs(tmp_path, "eval")
    assert (run / "report" / "bad_files.txt").read_text().startswith("# 12 unreadable file(s)")


def test_eval_on_a_folder_of_another_generators_fakes_reports_the_share_caught(tiny_checkpoints, tmp_path):
    """ROOT/fake/*.jpg, no split folders, no real images: the test split, scored by the share called fake."""
    faces = generate(tmp_path / "made", 32, 4, 4, 10, progress=False)
    other = tmp_path / "other_gan"
    other.mkdir()
    shutil.move(faces / "test" / "fake", other / "fake")
    result = run_ffd("ffd.eval", f"ckpt_path={tiny_checkpoints['vit']}", f"data.root={other}", root=tmp_path)
    assert "split 'test' holds fake images only: accuracy is the share called fake" in result.stdout
    (run,) = run_dirs(tmp_path, "eval")
    summary = json.loads((run / "report" / "metrics.json").read_text())
    with (run / "report" / "predictions.csv").open() as handle:
        called_fake = [row["verdict"] == "fake" for row in csv.DictReader(handle)]
    assert summary["counts"]["real"] == 0 and summary["counts"]["fake"] == len(called_fake) == 5
    assert summary["metrics"]["accuracy"] == pytest.approx(sum(called_fake) / 5)
    assert summary["metrics"]["auroc"] is None and not (run / "report" / "roc.png").exists()


def test_missing_data_root_is_one_clear_error(tmp_path):
    """Found before the DenseNet's ImageNet weights are fetched (offline, timm retries for a minute)."""
    result = run_ffd("ffd.train", "data=kaggle", root=tmp_path, expect_ok=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data.root is not set" in result.stderr and "huggingface" not in result.stderr
    (run,) = run_dirs(tmp_path, "train")  # the failed run's folder says why it failed
    assert "ffd: error: data.root is not set" in (run / "train.log").read_text()


@pytest.mark.parametrize("test", [True, False])
def test_a_run_that_tests_needs_its_test_split_before_it_trains(tmp_path, test):
    """An empty test class stops the run before the fit rather than after hours of it, and a run that stops
    on its data shows no TensorBoard run (hp_metric -1 was logged before the data was read); a run that
    does not test never reads the test split."""
    faces = generate(tmp_path / "faces", 32, 24, 12, 12, progress=False)
    shutil.rmtree(faces / "test" / "fake")
    result = run_in_process(
        "ffd.train",
        "model=vit",
        "data=kaggle",
        f"data.root={faces}",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "callbacks.model_summary=null",
        f"test={test}",
        root=tmp_path,
    )
    assert result.returncode == (1 if test else 0), result.stderr[-2000:]
    (run,) = run_dirs(tmp_path, "train")
    if test:
        assert result.returncode == 1 and "split 'test' has no fake images" in result.stderr, result.stderr
        assert not list(run.glob("**/*.ckpt"))
        for file in run.glob("tensorboard/**/events.out.tfevents*"):  # Lightning opens one before setup
            events = EventAccumulator(str(file))
            events.Reload()
            assert not events.Tags()["scalars"], f"a TensorBoard run with {events.Tags()['scalars']}"
    else:
        assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("content", [None, "not a checkpoint", {"state_dict": {}, "hyper_parameters": {}}])
def test_bad_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "model.ckpt"
    if content == "not a checkpoint":
        path.write_text(content)
    elif content is not None:
        torch.save(content, path)
    result = run_in_process("ffd.eval", f"ckpt_path={path}", "data=synthetic", root=tmp_path)
    assert result.returncode == 1
    assert str(path) in result.stderr and "ckpt" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("given", ["folder", "missing", "other model"])
def test_resuming_from_a_wrong_checkpoint_path_is_one_clear_error(tiny_checkpoints, tmp_path, given):
    run_folder = tiny_checkpoints["vit"].parent.parent
    path, model, message = {
        "folder": (
            run_folder,
            "vit",
            f"is a folder; pass one of its files (newest first): {run_folder}/checkpoints/",
        ),
        "missing": (tmp_path / "absent.ckpt", "vit", "absent.ckpt does not exist"),
        "other model": (tiny_checkpoints["vit"], "densenet", "holds a 'vit' model, not the 'densenet'"),
    }[given]
    result = run_in_process("ffd.train", *TINY, f"model={model}", f"ckpt_path={path}", root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert message in result.stderr


def test_a_fit_that_is_not_tested_still_lists_the_files_it_skipped(tmp_path):
    """With test=false (or a stopped fit) no report was written, and the files skipped in training were
    named nowhere: train.log only counted them."""
    data = generate(tmp_path / "data" / "synthetic" / "s32_24-12-12_seed0", 32, 24, 12, 12, progress=False)
    truncated = index_dataset(data).samples["train"][0][0]
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:40])  # found by the index, fails to decode
    empty = Path(truncated).with_name("empty.jpg")
    empty.write_bytes(b"")  # skipped by the index
    result = run_in_process("ffd.train", *TINY, "model=vit", "test=false", root=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_dirs(tmp_path, "train")
    listed = (run / "report" / "bad_files.txt").read_text()
    assert listed.startswith("# 2 unreadable file(s)") and truncated in listed and str(empty) in listed


def _break_a_process_share(root: Path) -> int:
    """Truncate (JPEG header kept) process 0's one training batch and its whole validation share, as
    Lightning's DistributedSampler deals the tiny set to 2 processes; returns the files broken."""
    data = generate(root / "data" / "synthetic" / "s32_24-12-12_seed0", 32, 24, 12, 12, progress=False)
    samples = index_dataset(data).samples
    train = DistributedSampler(range(24), num_replicas=2, rank=0, shuffle=True, seed=42)  # seed=42: cfg's
    broken = [samples["train"][i][0] for i in list(train)[:8]]  # data.batch_size=8
    broken += [samples["val"][i][0] for i in range(0, 12, 2)]
    for path in broken:
        Path(path).write_bytes(Path(path).read_bytes()[:40])
    return len(broken)


def test_two_process_ddp_writes_one_run_and_one_report(tmp_path):
    """Also when every file of one process's training batch and validation share is unreadable: that
    process must still join the others' collectives (a skipped step crashed DDP, a skipped metric
    sync hung it)."""
    broken = _break_a_process_share(tmp_path)
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
    # bad_files.txt lists every split's; the count beside the test metrics is the test split's (none here)
    assert summary["counts"]["unreadable_skipped"] == 0
    assert (runs[0] / "report" / "bad_files.txt").read_text().startswith(f"# {broken} unreadable")


def test_two_process_ddp_prints_a_shared_user_error_once(tmp_path):
    """Both processes raise process 0's indexing error (no validation split); both printed it."""
    data = generate(tmp_path / "set", 32, 8, 4, 4, progress=False)
    shutil.rmtree(data / "valid")
    result = run_ffd(
        "ffd.train",
        *(o for o in TINY if not o.startswith("data.synthetic")),
        "data=kaggle",
        f"data.root={data}",
        "model=vit",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        root=tmp_path,
        expect_ok=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("ffd: error:") == 1 and "split 'val' is empty" in result.stderr
    (run,) = run_dirs(tmp_path, "train")
    assert (run / "train.log").read_text().count("ffd: error:") == 1


def test_two_process_ddp_logs_each_test_image_once(tmp_path):
    """11 test images on 2 processes: the distributed sampler repeats one to make 12. The logged test
    metrics (TensorBoard, what a sweep optimises) must still be the report's, which scores each file once."""
    run_ffd(
        "ffd.train",
        *TINY,
        "data.synthetic.test=11",
        "model=vit",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        root=tmp_path,
    )
    (run,) = run_dirs(tmp_path, "train")
    summary = json.loads((run / "report" / "metrics.json").read_text())
    assert summary["counts"]["images"] == 11
    logged = {}
    for file in (run / "tensorboard").glob("events.out.tfevents.*"):
        events = EventAccumulator(str(file))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith("test/"):
                logged[tag.removeprefix("test/")] = events.Scalars(tag)[-1].value
    assert set(logged) >= {"loss", "accuracy", "f1", "auroc", "auprc"}, logged
    for name, value in logged.items():
        assert value == pytest.approx(summary["metrics"][name], abs=1e-5), (name, logged, summary["metrics"])


def test_last_ckpt_is_the_latest_epoch_even_when_the_best_is_older(tmp_path):
    """Lightning 2.6 writes save_last's copy only when the monitored metric improves; at lr 0 it never
    does after epoch 0, yet last.ckpt (what a user resumes from) must hold the final epoch."""
    result = run_in_process(
        "ffd.train", *TINY, "model=vit", "trainer.max_epochs=3", "model.optimizer.lr=0", root=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = run_dirs(tmp_path, "train")
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2, last["epoch"]
    (best,) = [p for p in (run / "checkpoints").iterdir() if p.name != "last.ckpt"]
    assert best.name.startswith("epoch000-"), best.name


def test_a_resumed_fit_keeps_the_best_epoch_found_before_the_interruption(tmp_path):
    """At lr 0 every epoch scores the same val/auroc, so epoch 0 stays the best across the resume; a new
    checkpoint folder would have lost its score and taken the first resumed epoch for the best."""
    lr0 = [*TINY, "model=vit", "model.optimizer.lr=0"]
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    run_ffd("ffd.train", *lr0, "trainer.max_epochs=2", "test=false", root=tmp_path / "first")
    (first,) = run_dirs(tmp_path / "first", "train")
    resumed = run_ffd(
        "ffd.train",
        *lr0,
        "trainer.max_epochs=4",
        f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
        root=tmp_path / "second",
    )
    assert "epoch000-" in resumed.stdout + resumed.stderr  # the checkpoint tested
    names = sorted(p.name for p in (first / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("epoch000-") and names[1] == "last.ckpt", names
    last = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 3


@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [("ffd.segment", "mediapipe", None), ("ffd.export", "onnxruntime", "export")],
)
def test_a_missing_dependency_names_what_to_install(tmp_path, command, module, extra):
    """As after a plain `pip install -e .` (an optional extra) or a broken install (mediapipe, a core
    dependency): the package is shadowed by one that cannot be imported."""
    (tmp_path / "shadow" / module).mkdir(parents=True)
    (tmp_path / "shadow" / module / "__init__.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {module}'!r}, name={module!r})"
    )
    args = ["input=unused"] if command == "ffd.segment" else ["ckpt_path=unused.ckpt"]
    shadow = {"PYTHONPATH": str(tmp_path / "shadow")}
    result = run_ffd(command, *args, root=tmp_path, expect_ok=False, env=shadow)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert (f'pip install -e ".[{extra}]"' if extra else "pip install -e . in a clone") in result.stderr
    assert f"needs {module}" in result.stderr


@pytest.mark.parametrize(("command", "key"), [("ffd.predict", "model"), ("ffd.segment", "input")])
def test_a_missing_required_option_is_one_line(tmp_path, command, key):
    result = run_in_process(command, *(["input=photos"] if key == "model" else []), root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{key}= is required" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.net.weights=absent.pth"], "absent.pth does not exist"),
        # Fails on any machine: with no GPU at all, or with fewer than 64.
        (["trainer=gpu", "trainer.devices=64"], "the trainer settings do not fit this machine"),
        (["model=vit", "model.net.image_size=16"], "model.net.image_size=16 but data.image_size=64"),
    ],
)
def test_a_config_object_that_cannot_be_built_is_one_clear_error(tmp_path, overrides, message):
    """Hydra wraps a constructor's error in its own 'Error in call to target' text: ffd unwraps it."""
    counts = [o for o in TINY if o.startswith("data.synthetic.") and "image_size" not in o]  # a small set
    result = run_in_process("ffd.train", "experiment=quickstart", *counts, *overrides, root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "ffd: error: " in result.stderr and message in result.stderr
    assert "Error in call to target" not in result.stderr
    if "trainer=gpu" in overrides and not torch.cuda.is_available():
        assert "use trainer=cpu" in result.stderr


def test_fine_tuning_a_random_backbone_is_refused_before_any_work(tmp_path):
    """model.net.pretrained=false, which the offline error offers, trained a random DenseNet121 frozen but
    for its top quarter, BatchNorm never leaving its initial statistics, with no word."""
    result = run_in_process("ffd.train", "data=synthetic", "model.net.pretrained=false", root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "ffd: error: model.net.pretrained=false starts the backbone from random weights" in result.stderr
    assert "callbacks.finetune=null" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before the synthetic set was written


def test_a_sweep_ranks_runs_by_the_best_validation_auroc_never_the_test_split(tmp_path):
    """The value returned to a Hydra sweeper was the test AUROC (tuning on the test split) or, without
    testing, the last epoch's validation AUROC rather than the tested (best) epoch's."""
    from hydra import compose, initialize_config_dir

    from ffd import train

    overrides = [*TINY, "model=vit", "trainer.max_epochs=3", "model.optimizer.lr=0.05", "logger=csv"]
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.data_dir={tmp_path / 'data'}",
            ],
        )
    sweep_value = train.main.__wrapped__.__wrapped__(cfg)  # the task function under hydra.main
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as handle:
        logged = [float(row["val/auroc"]) for row in csv.DictReader(handle) if row.get("val/auroc")]
    assert len(logged) == 3
    assert sweep_value == pytest.approx(max(logged))
