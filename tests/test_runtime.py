"""What the entry points share (ffd.runtime): list options as users type them, folders given for files."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ffd.runtime import UserError, folder_instead_of_file, list_option

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
    assert message.startswith(f"ckpt_path={tmp_path / 'run'} is a folder; pass one of its files: ")
    assert str(checkpoints / "epoch002-auroc0.9100.ckpt") in message and "notes.txt" not in message
    assert "last.ckpt is the latest epoch" in message
    empty = folder_instead_of_file(tmp_path / "run", "model", (".onnx",))
    assert "holds no .onnx file" in empty
