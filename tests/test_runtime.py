"""What the entry points share (ffd.runtime): list options as users type them, folders given for files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ffd.errors import UserError
from ffd.options import folder_instead_of_file, list_option
from ffd.outputs import refuse_earlier_outputs

CHOICES = ("fp32", "fp16", "int8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(["fp32", "int8"], ["fp32", "int8"]), ("int8", ["int8"]), ("fp16, int8", ["fp16", "int8"])],
)
def test_a_list_option_takes_a_list_one_value_or_a_comma_separated_string(value, expected) -> None:
    cfg = OmegaConf.create({"export": {"precisions": value}})
    assert list_option(cfg, "export.precisions", CHOICES) == expected


@pytest.mark.parametrize(("value", "problem"), [("int4", "unknown int4"), ([], "empty"), (None, "empty")])
def test_a_bad_list_option_names_the_key_and_the_choices(value, problem) -> None:
    cfg = OmegaConf.create({"export": {"precisions": value}})
    with pytest.raises(UserError, match=f"export.precisions=.*{problem}.*Choose among fp32, fp16, int8"):
        list_option(cfg, "export.precisions", CHOICES)


def test_a_folder_given_for_a_model_file_lists_the_files_that_would_do(tmp_path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for name in ("epoch002-auroc0.9100.ckpt", "last.ckpt", "notes.txt"):
        (checkpoints / name).write_bytes(b"")
    message = folder_instead_of_file(tmp_path / "run", "ckpt_path", (".ckpt",))
    assert message.startswith(
        f"ckpt_path={tmp_path / 'run'} is a folder; pass one of its files (newest first): "
    )
    assert str(checkpoints / "epoch002-auroc0.9100.ckpt") in message and "notes.txt" not in message
    assert "last.ckpt is the latest epoch" in message
    empty = folder_instead_of_file(tmp_path / "run", "model", (".onnx",))
    assert "neither it nor the folders up to two levels below it hold a .onnx file" in empty


def test_the_train_outputs_folder_lists_its_runs_checkpoints_newest_first(tmp_path) -> None:
    """``ckpt_path=outputs/train`` is two levels above the checkpoints: the newest run's come first."""
    runs = tmp_path / "outputs" / "train"
    for age, run in enumerate(("2026-11-26_10-00-00", "2026-11-25_09-00-00")):
        checkpoint = runs / run / "checkpoints" / "last.ckpt"
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_bytes(b"")
        os.utime(checkpoint, (1e9 - age * 1e6, 1e9 - age * 1e6))
    message = folder_instead_of_file(runs, "ckpt_path", (".ckpt",))
    newest, older = (
        str(runs / run / "checkpoints" / "last.ckpt")
        for run in ("2026-11-26_10-00-00", "2026-11-25_09-00-00")
    )
    assert newest in message and older in message
    assert message.index(newest) < message.index(older)


def test_an_earlier_output_is_refused_naming_the_callers_overwrite_option(tmp_path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"earlier")
    refuse_earlier_outputs(tmp_path, ["other.onnx"], overwrite=False)
    refuse_earlier_outputs(tmp_path, ["model.onnx"], overwrite=True)
    with pytest.raises(
        UserError, match=r"already holds model\.onnx from an earlier run\. Pass export\.overwrite=true"
    ):
        refuse_earlier_outputs(
            tmp_path, ["model.onnx"], False, key="export.output_dir", overwrite_key="export.overwrite"
        )


def test_lightning_adverts_are_dropped_from_the_console_and_the_log() -> None:
    import logging

    from ffd import WithoutLightningTips

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(
            "lightning.pytorch.utilities.rank_zero", logging.INFO, "", 0, message, (), None
        )

    tips = WithoutLightningTips()
    assert not tips.filter(record("💡 Tip: For seamless cloud logging, try installing litlogger"))
    assert tips.filter(record("GPU available: False, used: False"))


def _train_config(output: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        return compose("train", overrides=["data=synthetic", f"paths.output_dir={output}", *overrides])


def test_ddp_on_cpus_trains_without_syncbatchnorm_and_without_a_logger_without_lr_monitor(
    monkeypatch, tmp_path
):
    """torch's DDP refuses SyncBatchNorm off CUDA (trainer=ddp on a CPU machine failed at the first step),
    and Lightning refuses a learning-rate monitor without a logger (~logger)."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    from ffd.runtime import make_trainer

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = _train_config(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "~logger")
    assert cfg.trainer.sync_batchnorm is True  # the config's setting, for GPUs
    trainer = make_trainer(cfg, loggers=[])
    assert trainer.strategy._layer_sync is None and cfg.trainer.sync_batchnorm is False
    assert not any(isinstance(callback, LearningRateMonitor) for callback in trainer.callbacks)


def test_ddp_that_reruns_the_command_is_refused_inside_a_sweep(monkeypatch, tmp_path):
    """Lightning starts DDP's extra processes by re-running sys.argv: in a -m sweep each would run the
    whole sweep again."""
    from ffd import runtime

    cfg = _train_config(tmp_path, "trainer=ddp", "trainer.accelerator=cpu")
    monkeypatch.setattr(runtime, "in_sweep", lambda: True)
    with pytest.raises(UserError, match="inside a -m sweep"):
        runtime.make_trainer(cfg, loggers=[])
    single = _train_config(tmp_path, "trainer=cpu")
    assert runtime.make_trainer(single, loggers=[]).strategy.launcher is None


def test_a_user_error_in_one_sweep_job_fails_that_job_only(monkeypatch, capsys):
    """SystemExit ended a whole -m sweep at its first bad job; Hydra counts an exception as one failed
    job, runs the others and exits 1 at the end."""
    from ffd import runtime

    @runtime.exit_on_user_error
    def job() -> None:
        raise UserError("model.net.image_size=16 but data.image_size=32")

    with pytest.raises(SystemExit) as stop:
        job()
    assert stop.value.code == 1
    monkeypatch.setattr(runtime, "in_sweep", lambda: True)
    with pytest.raises(UserError, match=r"model\.net\.image_size=16"):
        job()
    error = capsys.readouterr().err
    assert error.count("ffd: error: model.net.image_size=16") == 2 and "Traceback" not in error


@pytest.mark.parametrize("own_process", [False, True])
@pytest.mark.parametrize("rank", [0, 1])
def test_under_ddp_process_0_alone_prints_a_shared_user_error(monkeypatch, capsys, rank, own_process):
    """Every DDP process raises the same user error (process 0's, sent to all): each printed it, N copies
    of one paragraph. A process's own error (a node that cannot see the data) is still printed by it."""
    from lightning.pytorch.utilities import rank_zero_only

    from ffd import runtime
    from ffd.errors import DatasetLayoutError

    monkeypatch.setattr(rank_zero_only, "rank", rank)

    @runtime.exit_on_user_error
    def job() -> None:
        error = DatasetLayoutError("/data/x.jpg is missing for process 1 on node-b")
        error.own_process = own_process
        raise error

    with pytest.raises(SystemExit) as stop:
        job()
    assert stop.value.code == 1  # every process stops
    printed = capsys.readouterr().err
    assert ("ffd: error: /data/x.jpg is missing" in printed) == (rank == 0 or own_process)


@pytest.mark.parametrize("value", ["no", "off", "yes", 0, 1, None])
def test_a_switch_given_a_word_or_number_is_refused_naming_the_true_and_false_it_takes(tmp_path, value):
    """Hydra reads test=no as the word "no", which Python takes as true: the test ran."""
    from ffd.options import flag_problem
    from ffd.train import train

    typed = "null" if value is None else value
    assert flag_problem(value, "test") == f"test={typed} is not a switch: write test=true or test=false"
    assert flag_problem(True, "test") is None and flag_problem(False, "test") is None
    cfg = _train_config(tmp_path, f"test={typed}")
    with pytest.raises(UserError, match=f"^test={typed} is not a switch"):
        train(cfg)


def test_a_switch_word_on_the_command_line_is_refused_but_a_name_may_be_one():
    """callbacks.speed.compile=no reached the config as the string "no", which turned compilation on."""
    from ffd.runtime import switch_word_problems

    typed = ["callbacks.speed.compile=no", "+trainer.detect_anomaly=On", "trainer.max_epochs=3"]
    names = ["input=no", "data.root=on", "export.output_dir=y", "models.face_landmarker.path=off"]
    problems = switch_word_problems([*typed, *names])
    assert [problem.split(" is not")[0] for problem in problems] == [
        "callbacks.speed.compile=no",
        "trainer.detect_anomaly=On",
    ]


def test_the_command_line_refuses_a_switch_word_before_the_run(tmp_path):
    """data.augment=off reached the data module as the string "off": augmentation on."""
    from cli import run_in_process

    result = run_in_process("ffd.train", "data=synthetic", "data.augment=off", root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "data.augment=off is not a switch: write data.augment=true or data.augment=false" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before the synthetic set was written


def test_an_option_of_a_callback_that_is_off_is_refused_not_ignored(tmp_path):
    """The quickstart sets callbacks.finetune: null; +callbacks.finetune.warmup_epochs=1, Hydra's own advice,
    ran without fine-tuning while the saved config and the hparams tab said warmup_epochs 1."""
    from ffd import runtime

    cfg = _train_config(tmp_path, "experiment=quickstart", "+callbacks.finetune.warmup_epochs=1")
    with pytest.raises(
        UserError, match=r"^callbacks.finetune has options \(warmup_epochs: 1\) but no _target_"
    ):
        runtime.make_trainer(cfg, loggers=[])
    assert runtime.make_trainer(_train_config(tmp_path, "experiment=quickstart"), loggers=[]).callbacks


def test_a_leading_tilde_in_a_file_or_folder_setting_is_the_home_folder(monkeypatch, tmp_path):
    """The shell leaves data.root=~/faces alone and Hydra takes it only quoted: ffd.eval then looked for a
    folder named ~, and ffd.export wrote into ./~/."""
    from ffd.runtime import expand_home

    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = OmegaConf.create(
        {
            "ckpt_path": "~/a.ckpt",
            "data": {"root": "~/faces", "batch_size": 8},
            "model": {"net": {"weights": "~/w.pth"}},
            "export": {"output_dir": "~/onnx", "note": "~ not a path"},
            "output": "${paths.output_dir}",
            "paths": {"output_dir": "/runs/x"},
        }
    )
    expand_home(cfg)
    assert (cfg.ckpt_path, cfg.data.root) == (f"{tmp_path}/a.ckpt", f"{tmp_path}/faces")
    assert (cfg.model.net.weights, cfg.export.output_dir) == (f"{tmp_path}/w.pth", f"{tmp_path}/onnx")
    assert cfg.export.note == "~ not a path" and cfg.output == "/runs/x"  # other keys, interpolations


def test_every_command_reads_a_quoted_tilde_path_as_the_home_folder(monkeypatch, tmp_path):
    from cli import run_in_process

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    result = run_in_process("ffd.eval", "ckpt_path='~/missing.ckpt'", root=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{home}/missing.ckpt" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("stop", "code", "how"),
    [("ctrl-c", 130, "Ctrl-C"), ("sigterm", 143, "SIGTERM"), ("lightning-sigterm", 143, "SIGTERM")],
)
def test_a_run_stopped_early_ends_in_one_line_and_the_shell_s_exit_code(capsys, stop, code, how):
    """Ctrl-C printed a 50 to 100-line traceback in predict, segment and export, and Lightning's answer to
    SIGTERM (a SystemExit without a code) made train and eval exit 0, a success to a job scheduler."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ffd.runtime import Terminated, exit_on_user_error

    raised = {"ctrl-c": KeyboardInterrupt, "sigterm": Terminated, "lightning-sigterm": SIGTERMException}[stop]

    @exit_on_user_error
    def task() -> None:
        raise raised

    with pytest.raises(SystemExit) as exit_:
        task()
    assert exit_.value.code == code
    assert capsys.readouterr().err == f"\nffd: stopped early ({how}); the files already written are kept.\n"
