"""Fixtures shared by test files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import TINY, run_dirs, run_ffd


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh, empty FFD_CACHE for the whole session: the tests never read the user's ~/.cache/ffd (a file
    placed there by hand would hide a missing offline copy) nor write into it. The entry points run in
    subprocesses inherit it through os.environ."""
    cache = tmp_path_factory.mktemp("ffd_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FFD_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One `ffd.train -m` sweep over both models on the tiny synthetic set: {model name: run folder}.

    The root (FFD_ROOT) is the runs' grandparent's parent; each run holds checkpoints/last.ckpt.
    """
    root = tmp_path_factory.mktemp("tiny_runs")
    run_ffd("ffd.train", "-m", *TINY, "model=densenet,vit", root=root)
    runs = {}
    for run in run_dirs(root, "train"):
        name = json.loads((run / "report" / "metrics.json").read_text())["model"]["name"]
        runs[name] = run
    return runs


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_runs: dict[str, Path]) -> dict[str, Path]:
    """{model name: last.ckpt} of the tiny sweep (a few steps of training: plumbing, not accuracy)."""
    return {name: run / "checkpoints" / "last.ckpt" for name, run in tiny_runs.items()}
