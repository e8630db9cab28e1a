"""`python -m ffd.<command> --help`: the command's usage and the config groups it composes, no others."""

from __future__ import annotations

import pytest

from cli import run_main_in_process


@pytest.mark.parametrize(
    ("command", "usage", "groups", "not_its_groups"),
    [
        (
            "ffd.train",
            "python -m ffd.train [model=densenet|vit]",
            ["model: densenet, vit", "experiment: quickstart"],
            [],
        ),
        (
            "ffd.eval",
            "python -m ffd.eval ckpt_path=PATH",
            ["data: kaggle, synthetic", "logger: csv"],
            ["model:"],
        ),
        (
            "ffd.segment",
            "python -m ffd.segment input=PATH",
            ["paths: default"],
            ["model:", "trainer:", "data:"],
        ),
        (
            "ffd.predict",
            "python -m ffd.predict input=PATH model=CKPT_OR_ONNX",
            ["paths: default"],
            ["trainer:"],
        ),
    ],
)
def test_help_shows_the_usage_and_only_the_command_s_own_config_groups(
    command: str, usage: str, groups: list[str], not_its_groups: list[str]
) -> None:
    result = run_main_in_process(command, "--help")
    assert result.returncode == 0
    shown = result.stdout
    assert shown.startswith(usage), shown[:500]
    section = shown.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert all(group in section for group in groups), section
    assert not any(group in section for group in not_its_groups), section
    assert f"task_name: {command.removeprefix('ffd.')}" in shown  # the config itself still follows
