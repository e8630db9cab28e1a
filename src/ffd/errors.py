"""The errors ffd raises for a user's mistake (a path, a file, an option), on the ground floor: every module
may raise them and the entry points (ffd.runtime.exit_on_user_error) show them as one paragraph with exit
code 1, with no import of ffd between them. This module imports no other ffd module."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input from the user (a path, a file, an option): shown as one paragraph, exit code 1."""


class UnreadableImageError(ValueError):
    """A file that is not a decodable image (empty, truncated, corrupt or another format).

    ``reason`` says why in a few words, without the path: what a listing shows beside the path in a
    column of its own (bad_files.txt, predictions.json, the tables of ffd.predict and ffd.segment), worded
    as the index's reasons are (ffd.data.index). The message, for an error shown alone, names the file and
    what to do about it.
    """

    def __init__(
        self,
        path: str | Path,
        reason: str,
        fix: str = "re-download or re-export it, or remove it from the folder",
    ) -> None:
        super().__init__(str(path), reason, fix)  # the arguments, so that a copy (pickle) is the same error
        self.path, self.reason, self.fix = str(path), reason, fix

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}; {self.fix}."


class ImageInputError(ValueError):
    """An ``input=`` that names no image: a path that does not exist, an empty folder, glob or list."""


class DatasetLayoutError(FileNotFoundError):
    """The data root is missing, ambiguous, or lacks a split or class; the message says what was found."""

    own_process = False  # True: about this DDP process alone, which prints it (see ffd.runtime)


class CheckpointError(ValueError):
    """A file that is not an ffd checkpoint, or not the model that was asked for."""


class WeightsError(RuntimeError):
    """Backbone weights that cannot be fetched, read, or that do not fit the backbone."""


# Every error ffd raises for a user's input. The classes that are not UserErrors keep the built-in base a
# caller may catch (a missing data root is a FileNotFoundError, an unreadable image a ValueError).
USER_ERRORS: tuple[type[Exception], ...] = (
    UserError,
    DatasetLayoutError,
    ImageInputError,
    UnreadableImageError,
    CheckpointError,
    WeightsError,
)
