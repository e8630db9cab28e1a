"""What the entry points share, and only they: the config resolvers, the trainer and the callbacks and
loggers built from config, Ctrl-C and SIGTERM, and a user's error shown as one paragraph instead of a stack
trace. The errors themselves are ffd.errors and the option checks ffd.options, which every module may use."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from ffd import record, resolvers  # noqa: F401  (registers the config resolvers)
from ffd.errors import USER_ERRORS, UserError
from ffd.options import flag_problem

T = TypeVar("T")


# Top-level module -> the pyproject extra that installs it.
OPTIONAL_MODULES = {
    **dict.fromkeys(("facexlib", "filterpy", "numba"), "segment"),
    "pytorch_grad_cam": "explain",
    **dict.fromkeys(("onnx", "onnxruntime", "onnxscript", "onnxconverter_common"), "export"),
    "mediapipe": None,  # a core dependency: missing only from a broken or partial install
}


def _instantiation_error(error: InstantiationException) -> str | None:
    """The message for a config object that could not be built because of the user's settings, or None.

    Hydra wraps whatever the constructor raised; an ffd user error shows as itself, and a Lightning
    MisconfigurationException (``trainer=gpu`` with no GPU, more devices than the machine has) with a hint.
    """
    cause = error.__cause__
    if isinstance(cause, USER_ERRORS):
        return str(cause)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if not isinstance(cause, MisconfigurationException):
        return None
    import torch

    message = f"the trainer settings do not fit this machine: {cause}"
    if not torch.cuda.is_available():
        message += (
            " PyTorch sees no CUDA GPU here; use trainer=cpu (or trainer=default, which picks the device), "
            "or check that the installed torch is a CUDA build (torch.version.cuda)."
        )
    return message


def _user_error_message(error: BaseException) -> str | None:
    """The one-paragraph message for an error caused by the user's input or setup, or None for a bug."""
    if isinstance(error, InstantiationException):
        return _instantiation_error(error)
    if isinstance(error, USER_ERRORS):
        return str(error)
    if isinstance(error, MissingMandatoryValue):  # a ??? in the config: input=, model=
        return f"{error.full_key}= is required; pass it on the command line."
    if isinstance(error, ModuleNotFoundError):
        package = (error.name or "").split(".")[0]
        if package in OPTIONAL_MODULES:
            return f"this command {needs_extra(error.name, OPTIONAL_MODULES[package])}"
    return None


def needs_extra(module: str, extra: str | None) -> str:
    """'needs MODULE, one of ffd's optional EXTRA dependencies: <how to install it>' (None: a core one)."""
    if extra is None:
        return (
            f"needs {module}, one of ffd's core dependencies, which this environment lacks: install ffd "
            'again, pip install -e . in a clone (or pip install ffd), and check that "import cv2" works.'
        )
    return (
        f"needs {module}, one of ffd's optional '{extra}' dependencies: "
        f'pip install -e ".[{extra}]" in a clone, or pip install "ffd[{extra}]".'
    )


def store_task_config(task: str, face_modes: Iterable[str]) -> None:
    """Compose conf/TASK.yaml from Hydra's config store rather than the conf/ folder (ffd.predict, ffd.serve).

    ``model=FILE`` is such a command's argument, but in conf/ ``model`` is also the training config group,
    and Hydra would read the override as a choice of that group. The store holds only what the task uses
    (paths, hydra, model_files, face), read from the same files, so the run folder and logging are the
    other tasks'."""
    conf = Path(__file__).resolve().parent / "conf"
    store = ConfigStore.instance()
    store.store(name=task, node=OmegaConf.load(conf / f"{task}.yaml"))
    for group in ("paths", "hydra", "model_files"):
        store.store(group=group, name="default", node=OmegaConf.load(conf / group / "default.yaml"))
    for option in face_modes:
        store.store(group="face", name=option, node=OmegaConf.load(conf / "face" / f"{option}.yaml"))


# Words that mean a switch's value to a person but are plain strings to Hydra (which knows true and false),
# and the keys that name files or folders, where such a word may be a name.
SWITCH_WORDS = {"yes", "no", "on", "off", "y", "n"}
NAME_KEYS = re.compile(r"(^|\.)(input|output|model|root|ckpt_path|path|weights|\w+_dir)$")


def dotted_items(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every key of a nested mapping as a dotted path with its value, inner nodes and leaves."""
    for key, value in tree.items():
        yield f"{prefix}{key}", value
        if isinstance(value, Mapping):
            yield from dotted_items(value, f"{prefix}{key}.")


def expand_home(cfg: DictConfig) -> None:
    """``~`` at the start of a file or folder setting, as the shell would: bash expands it after ``=`` only
    where the key could be a shell variable (``input=~/x``, not ``data.root=~/x``), and Hydra takes it only
    quoted. Done once, here, so that every command reads ``~`` alike."""
    for key, value in dotted_items(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(value, str) and value.startswith("~") and NAME_KEYS.search(key):
            OmegaConf.update(cfg, key, os.path.expanduser(value), merge=False)


def switch_word_problems(overrides: Sequence[str]) -> list[str]:
    """The command-line overrides that give a switch a word (``callbacks.speed.compile=no``): a non-empty
    string, which Python takes as true, so the switch would be turned on."""
    problems = []
    for override in overrides:
        key, _, value = override.partition("=")
        if value.lower() in SWITCH_WORDS and not NAME_KEYS.search(key.lstrip("+~")):
            problems.append(f"{flag_problem(value, key.lstrip('+~'))} (Hydra reads {value} as a word)")
    return problems


def _check_switch_words() -> None:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and (problems := switch_word_problems(HydraConfig.get().overrides.task)):
        raise UserError(f"{'; '.join(problems)}.")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill), raised where Ctrl-C's KeyboardInterrupt would be."""


@contextlib.contextmanager
def sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """Within: SIGTERM ends the run the way Ctrl-C does, through the ``finally`` blocks that write what was
    done (ffd.predict's CSV, ffd.segment's summary.json); Python's default ends it at once and loses that.
    Not for Lightning runs: Lightning handles SIGTERM itself (``SIGTERMException``) at a step boundary."""

    def stop(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped_early(how: str, code: int) -> SystemExit:
    """One line for a run stopped by Ctrl-C or SIGTERM (no traceback): the exit code a shell gives it."""
    message = f"stopped early ({how}); the files already written are kept"
    print(f"\nffd: {message}.", file=sys.stderr)
    record.error("ffd: %s.", message)
    return SystemExit(code)


def exit_on_user_error(task: Callable[..., T]) -> Callable[..., T]:
    """Turn a user error into its message on stderr (and in the run's log file) and exit code 1, and a run
    stopped by Ctrl-C or SIGTERM into one line and exit code 130 or 143; bugs still raise with a trace."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            _check_switch_words()
            if args and isinstance(args[0], DictConfig):
                expand_home(args[0])
            return task(*args, **kwargs)
        except KeyboardInterrupt as stop:
            terminated = isinstance(stop, Terminated)
            raise _stopped_early("SIGTERM" if terminated else "Ctrl-C", 143 if terminated else 130) from None
        except SystemExit as exit_:
            # Lightning's answer to SIGTERM: a SystemExit without a code, which would exit 0 as a success.
            if type(exit_).__name__ == "SIGTERMException":
                raise _stopped_early("SIGTERM", 143) from None
            raise
        except Exception as error:
            message = _user_error_message(error)
            if message is None:
                raise
            if _reported_here(error):
                print(f"\nffd: error: {message}", file=sys.stderr)
                record.error("ffd: error: %s", message)  # a failed run's folder says why it failed
            if in_sweep():
                # Hydra's launcher counts an exception as one failed job, runs the other jobs, and exits
                # 1 at the end; SystemExit would end the whole sweep here.
                raise UserError(message) from None
            raise SystemExit(1) from None

    return wrapper


def _reported_here(error: BaseException) -> bool:
    """Whether this process prints and logs `error`: under DDP each process raises the same user error
    (process 0's, sent to them), and N copies of one paragraph hide it; process 0 speaks for them all,
    unless the error is this process's own (``own_process``: a node that cannot see the data)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0 or getattr(error, "own_process", False)


def in_sweep() -> bool:
    """Whether this is one job of a Hydra multirun (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def instantiate_all(group: DictConfig | None, key: str) -> list[Any]:
    """Instantiate every entry of the config group ``key`` (``callbacks``, ``logger``); null entries are
    off. An entry with options but no ``_target_`` is refused: ``+callbacks.finetune.warmup_epochs=1``
    where the experiment set ``finetune: null`` looked on in the saved config and the hparams, and did
    nothing."""
    if not group:
        return []
    headless = [name for name, node in group.items() if node and "_target_" not in node]
    if headless:
        name = headless[0]
        raise UserError(
            f"{key}.{name} has options ({OmegaConf.to_yaml(group[name]).strip()}) but no _target_: it is off "
            f"in this config ({key}.{name}: null), and an option alone does not turn it on. Give the whole "
            f"entry, e.g. '+{key}.{name}={{_target_: <class>, ...}}' (conf/ names the class), or drop the "
            "option."
        )
    return [instantiate(node, _convert_="all") for node in group.values() if node]


def make_trainer(cfg: DictConfig, loggers: list[Any], hparams: dict[str, Any] | None = None) -> Any:
    """The ``cfg.trainer`` Lightning Trainer with ``cfg.callbacks``, less the settings that cannot work here,
    and the config plus ``hparams`` in the loggers' hparams view (``LogConfig``).

    - ``sync_batchnorm`` (trainer=ddp) is turned off unless the processes run on CUDA GPUs: torch's DDP
      refuses SyncBatchNorm on anything else.
    - The learning-rate monitor is left out when there is no logger (``~logger``): Lightning refuses it.
    - DDP started by re-running the command is refused inside a ``-m`` sweep: each extra process would
      start the whole sweep again.
    """
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    from ffd.callbacks.hparams import LogConfig

    settings = cfg.trainer
    on_cuda = torch.cuda.is_available() and settings.get("accelerator", "auto") in ("auto", "gpu", "cuda")
    if settings.get("sync_batchnorm") and not on_cuda:
        settings.sync_batchnorm = False
        record.info("sync_batchnorm off: torch synchronises BatchNorm across processes on CUDA GPUs only.")
    callbacks = instantiate_all(cfg.get("callbacks"), "callbacks")
    if not loggers and any(isinstance(callback, LearningRateMonitor) for callback in callbacks):
        callbacks = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
        record.info("No logger: the learning-rate monitor is off.")
    if loggers:
        callbacks.append(LogConfig(cfg, hparams))
    trainer = instantiate(settings, callbacks=callbacks, logger=loggers)
    if in_sweep() and isinstance(getattr(trainer.strategy, "launcher", None), _SubprocessScriptLauncher):
        raise UserError(
            f"trainer.devices={settings.get('devices')} with strategy={settings.get('strategy')} inside a -m "
            "sweep: Lightning starts the extra processes by running this command again, and each would "
            "start the whole sweep again. Run each multi-device configuration as its own command (a shell "
            "loop over the values), or sweep with hydra/launcher=slurm, where SLURM starts the processes."
        )
    return trainer
