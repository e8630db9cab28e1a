"""Run ffd's entry points as a user does: `python -m ffd.<task> overrides...` in a subprocess, or, where
no process is needed (an option error), their task function in this one."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "conf"

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
TINY_DATA = ["data=synthetic", *(o for o in TINY if o.startswith("data."))]
PROCESS_ENV = {
    "HYDRA_FULL_ERROR": "0",
    "PYTHONWARNINGS": "ignore",
    # Offline: no test may reach huggingface.co (a missing weight file fails at once instead of after
    # the hub's retries). A fixed width: rich sizes its tables to COLUMNS when not on a terminal, so
    # console assertions do not depend on the terminal pytest was started from.
    "HF_HUB_OFFLINE": "1",
    "COLUMNS": "200",
}


def run_ffd(
    module: str, *overrides: str, root: Path, expect_ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m module`` with FFD_ROOT=root (its outputs/ and data/ go there), and ``env`` on top."""
    env = {**os.environ, "FFD_ROOT": str(root), **PROCESS_ENV, **(env or {})}
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
    """The run folders (those holding .hydra/) of a task under root/outputs, sorted."""
    return sorted(p.parent for p in (root / "outputs" / task).glob("**/.hydra"))


def run_in_process(module: str, *overrides: str, root: Path) -> subprocess.CompletedProcess:
    """What ``run_ffd(module, *overrides)`` returns, without starting Python again (seconds of imports).

    Calls the task function that ``exit_on_user_error`` wraps under ``hydra.main`` with the config that
    Hydra's compose API makes of ``overrides``, and the HydraConfig that hydra.main would set (the run
    folder, the command-line overrides that ffd checks for switch words). For option errors and other early
    refusals: Hydra's job logging (the run's .log file), the did-you-mean hints printed around hydra.main
    and ``-m`` sweeps need the process (run_ffd). A bug raises here as it would print its traceback there.
    """
    from hydra import compose, initialize, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    task = importlib.import_module(module).main.__wrapped__.__wrapped__  # suggest_keys, then hydra.main
    name = module.removeprefix("ffd.")
    in_store = f"{name}.yaml" in ConfigStore.instance().repo  # ffd.predict composes from the store
    stdout, stderr = io.StringIO(), io.StringIO()
    environ = set(os.environ)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**PROCESS_ENV, "FFD_ROOT": str(root)}.items():
            patch.setenv(key, value)
        patch.chdir(root)
        runs = root / "outputs" / name
        run_dir = runs / f"in_process_{len(list(runs.glob('in_process_*')))}"  # a new one each call
        with (
            initialize(config_path=None, version_base="1.3")
            if in_store
            else initialize_config_dir(str(CONF), version_base="1.3")
        ):
            cfg = compose(
                name,
                overrides=[*overrides, f"hydra.job.name={name}"],
                return_hydra_config=True,
            )
        cfg.hydra.runtime.output_dir = str(run_dir)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # as hydra.main hands the config to the task
        (run_dir / ".hydra").mkdir(parents=True)  # where run_dirs finds a run, as hydra.main leaves it
        OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                task(cfg)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        finally:
            HydraConfig.instance().cfg = None  # later tests run outside any Hydra job
            for key in set(os.environ) - environ:  # PL_GLOBAL_SEED and the like, set by the task
                patch.delenv(key)
    return subprocess.CompletedProcess([module, *overrides], code, stdout.getvalue(), stderr.getvalue())


def run_main_in_process(module: str, *arguments: str) -> subprocess.CompletedProcess:
    """``python -m module arguments`` in this process, through hydra.main and the hints around it (runpy
    runs the module as __main__, so that hydra.main finds conf/ beside its file), for what is answered
    before any job starts: ``--help``, and an override Hydra cannot compose (its error, then ffd's hints).
    Hydra sets up logging even for those: undone here, so that later tests log as before."""
    from hydra.core.hydra_config import HydraConfig

    stdout, stderr = io.StringIO(), io.StringIO()
    code, logging_state = 0, _logging_state()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [module, *arguments])
        for key, value in PROCESS_ENV.items():
            patch.setenv(key, value)
        try:
            with (
                contextlib.redirect_stdout(stdout),
                contextlib.redirect_stderr(stderr),
                warnings.catch_warnings(),
            ):
                # runpy's note that the module was imported before: this process imports ffd's modules
                warnings.filterwarnings("ignore", "'ffd.* found in sys.modules", RuntimeWarning)
                runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        finally:
            HydraConfig.instance().cfg = None  # set while Hydra composed, --help's config too
            _restore_logging(logging_state)
    return subprocess.CompletedProcess([module, *arguments], code, stdout.getvalue(), stderr.getvalue())


def _logging_state() -> dict[logging.Logger, tuple]:
    """Every logger's handlers, level, propagation and switch, the root's included."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in logging.Logger.manager.loggerDict)]
    return {lg: (list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers}


def _restore_logging(state: dict[logging.Logger, tuple]) -> None:
    for lg, (handlers, level, propagate, disabled) in state.items():
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled
