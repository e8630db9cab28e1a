"""What the entry points share: build callbacks and loggers from config, log the config, report
user errors as one clear paragraph instead of a stack trace."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from ffd import command_help, record

T = TypeVar("T")


def gpu_precision() -> str:
    """Lightning's autocast precision for this machine's GPU: bf16 where supported, else fp16."""
    import torch

    # including_emulation=False: a V100 or T4 can hold bf16 tensors but has no bf16 tensor cores.
    native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16-mixed" if native else "16-mixed"


def model_cache() -> str:
    """The model file cache, as ``python -m ffd.assets`` finds it ($FFD_CACHE, else ~/.cache/ffd; also
    without $HOME)."""
    from ffd.assets import default_cache_dir  # ffd.assets imports this module

    return str(default_cache_dir())


# Config interpolations: ${ffd.gpu_precision:} (conf/trainer/gpu.yaml), ${ffd.model_cache:} (conf/paths),
# and each command's --help (conf/hydra/default.yaml).
for name, resolver in (
    ("ffd.gpu_precision", gpu_precision),
    ("ffd.model_cache", model_cache),
    ("ffd.usage", command_help.usage),
    ("ffd.config_groups", command_help.config_groups),
):
    if not OmegaConf.has_resolver(name):
        OmegaConf.register_new_resolver(name, resolver)


def device_problem(device: str) -> str | None:
    """Why ``device=`` (auto, cpu, cuda, cuda:N) cannot be used here, or None."""
    import torch

    if device in ("auto", "cpu"):
        return None
    try:
        kind = torch.device(device).type
    except RuntimeError:
        return f"device={device} is not a device; use auto, cpu, cuda or cuda:N"
    if kind != "cuda":
        return f"device={device}: use auto, cpu, cuda or cuda:N"
    if not torch.cuda.is_available():
        return f"device={device}, but PyTorch sees no CUDA GPU here; use device=auto or device=cpu"
    return None


def load_failure(error: Exception) -> str:
    """One line on why a model file did not load, for a user's error message.

    Never PyTorch's own weights_only text, which advises loading with weights_only=False: ffd never runs
    pickled code from a user's file."""
    chain = [error]  # timm re-raises PyTorch's refusal as a RuntimeError with the same advice
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    refusals = [str(e) for e in chain if "weights_only" in str(e)]
    if refusals:
        if any("Unsupported global" in text or "allowlisted" in text for text in refusals):
            return "it holds pickled objects beyond tensors, and ffd never runs pickled code"
        return "not a PyTorch file of tensors"
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    first = re.sub(r"\x1b\[[0-9;]*m", "", first)  # colour codes
    return f"{type(error).__name__}: {first[:200] if first else 'empty or truncated'}"


class UserError(Exception):
    """Bad input from the user (a path, a file, an option): shown as one paragraph, exit code 1."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every error ffd raises for a user's input, wherever in the package it is defined."""
    from ffd.data.index import DatasetLayoutError
    from ffd.images import ImageInputError, UnreadableImageError
    from ffd.models.classifier import CheckpointError
    from ffd.models.densenet import WeightsError

    return (
        UserError,
        DatasetLayoutError,
        ImageInputError,
        UnreadableImageError,
        CheckpointError,
        WeightsError,
    )


def output_folder(value: str | Path, key: str = "output") -> Path:
    """The folder option ``key`` names; an empty ``key=`` (an unset shell variable) is refused rather than
    read as the current folder, which would fill it with the run's files."""
    if not str(value).strip():
        raise UserError(f"{key}= is empty (an unset shell variable?). Name a folder, or leave {key} out.")
    return Path(value)


def make_output_dir(output: Path, key: str = "output") -> None:
    """Create the output folder (option ``key``) and write a file in it before any work, so that an
    unwritable place fails first, in one paragraph."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output).close()
    except OSError as error:
        raise UserError(
            f"{key}={output} cannot be written to ({error.strerror or error}). Choose a folder you can "
            "write to."
        ) from None


def refuse_earlier_outputs(
    output: Path, names: list[str], overwrite: bool, key: str = "output", overwrite_key: str = "overwrite"
) -> None:
    """Never replace an earlier run's files (those of ``names`` in ``output``) unless asked."""
    existing = [name for name in names if (output / name).exists()]
    if existing and not overwrite:
        raise UserError(
            f"{key}={output} already holds {', '.join(existing)} from an earlier run. "
            f"Pass {overwrite_key}=true to replace them, or choose another folder "
            "(the default is a new folder per run)."
        )


def as_typed(value: Any) -> str:
    """``value`` as it is typed on the command line: true, false and null, not Python's True, False, None."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def count_problem(value: Any, key: str, minimum: int = 1) -> str | None:
    """Why ``value`` cannot be the count option ``key`` (a whole number >= ``minimum``), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"{key}={as_typed(value)} must be a whole number, at least {minimum}"
    return None


def flag_problem(value: Any, key: str) -> str | None:
    """Why ``value`` cannot be the switch ``key``, or None. Hydra reads ``key=no`` or ``key=off`` as a word,
    which Python takes as true: ``overwrite=no`` replaced earlier results."""
    if not isinstance(value, bool):
        return f"{key}={as_typed(value)} is not a switch: write {key}=true or {key}=false"
    return None


def workers_problem(value: Any, key: str) -> str | None:
    """Why ``value`` cannot be a loader worker count (null = from the CPU count, or 0 or more), or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        return f"{key}={as_typed(value)} must be null (from the CPU count) or 0 or more"
    return None


def threshold_problem(value: Any, key: str) -> str | None:
    """Why ``value`` cannot be a P(fake) threshold, or None. (An int 0 or 1 is fine: pass float(value)
    on, as torchmetrics refuses ints.)"""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return f"{key}={as_typed(value)} is not a probability: pick a value between 0 and 1"
    return None


def folder_instead_of_file(folder: Path, key: str, suffixes: tuple[str, ...]) -> str:
    """The message for a folder given where a model file is expected: the files in it, or up to two levels
    down (``outputs/train`` -> ``<run>/checkpoints/``), newest first, so the user can copy one."""
    found = sorted(
        (
            path
            for pattern in ("*", "*/*", "*/*/*")
            for path in folder.glob(pattern)
            if path.suffix.lower() in suffixes and path.is_file()
        ),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    if not found:
        kinds = " or ".join(suffixes)
        return (
            f"{key}={folder} is a folder, and neither it nor the folders up to two levels below it hold a "
            f"{kinds} file. Pass a file."
        )
    names = ", ".join(str(path) for path in found[:6]) + (f" and {len(found) - 6} more" if found[6:] else "")
    message = f"{key}={folder} is a folder; pass one of its files (newest first): {names}."
    if any(path.name == "last.ckpt" for path in found):
        message += " last.ckpt is the latest epoch, epochNNN-aurocX.ckpt the best by validation AUROC."
    return message


# Top-level module -> the pyproject extra that installs it.
OPTIONAL_MODULES = {
    **dict.fromkeys(("mediapipe", "facexlib", "filterpy", "numba"), "segment"),
    **dict.fromkeys(("onnx", "onnxruntime", "onnxscript", "onnxconverter_common"), "export"),
}


def list_option(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> list[str]:
    """A list option such as ``export.precisions``, also when given as ``key=a`` or ``'key="a,b"'`` (Hydra
    reads those as one string, which ``list()`` would split into characters); checked against
    ``choices``."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    items = [str(item) for item in value or []]
    unknown = [item for item in items if item not in choices]
    if unknown or not items:
        problem = f"unknown {', '.join(unknown)}" if unknown else "empty"
        raise UserError(
            f"{key}={items}: {problem}. Choose among {', '.join(choices)}, "
            f"e.g. {key}=[{','.join(choices[:2])}]."
        )
    return items


def _instantiation_error(error: InstantiationException) -> str | None:
    """The message for a config object that could not be built because of the user's settings, or None.

    Hydra wraps whatever the constructor raised; an ffd user error shows as itself, and a Lightning
    MisconfigurationException (``trainer=gpu`` with no GPU, more devices than the machine has) with a hint.
    """
    cause = error.__cause__
    if isinstance(cause, user_error_types()):
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
    if isinstance(error, user_error_types()):
        return str(error)
    if isinstance(error, MissingMandatoryValue):  # a ??? in the config: input=, model=
        return f"{error.full_key}= is required; pass it on the command line."
    if isinstance(error, ModuleNotFoundError):
        extra = OPTIONAL_MODULES.get((error.name or "").split(".")[0])
        if extra:
            return f"this command {needs_extra(error.name, extra)}"
    return None


def needs_extra(module: str, extra: str) -> str:
    """'needs MODULE, one of ffd's optional EXTRA dependencies: <how to install it>'."""
    return (
        f"needs {module}, one of ffd's optional '{extra}' dependencies: "
        f'pip install -e ".[{extra}]" in a clone, or pip install "ffd[{extra}]".'
    )


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
