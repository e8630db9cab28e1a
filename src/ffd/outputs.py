"""The output folder of a command: refused when empty, created and written to before any work, and never
refilled over an earlier run's files unless asked. This module imports only ffd.errors."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ffd.errors import UserError


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
