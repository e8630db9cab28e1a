"""What ffd adds to a checkpoint beside Lightning's state: the model card and the decision rule.

``checkpoint["ffd"]`` holds plain data (so ``torch.load(weights_only=True)`` reads it):

- ``card``: what the model was trained on and how well it tested (``ffd.models.card``), which
  ``ffd.predict`` prints and an ONNX export carries in its metadata;
- ``decision``: the threshold chosen on the validation split and the calibration temperature
  (``ffd.trust``), which ``ffd.predict`` applies unless told otherwise.

Both are written after fitting, when they are known, into the checkpoint files already on disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

NOTES_KEY = "ffd"


def read_notes(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The ffd notes of a loaded checkpoint; {} for one written before notes existed."""
    notes = checkpoint.get(NOTES_KEY)
    return dict(notes) if isinstance(notes, Mapping) else {}


def update_notes(path: str | Path, **notes: Any) -> None:
    """Merge ``notes`` (e.g. ``card={...}``) into the checkpoint file at ``path``, atomically.

    The file is read with ``weights_only=True`` and replaced only once the new one is fully written, so
    an interrupted update leaves the old checkpoint intact. A symbolic link is followed, not replaced.
    """
    target = Path(os.path.realpath(path))
    checkpoint = torch.load(target, map_location="cpu", weights_only=True)
    checkpoint[NOTES_KEY] = read_notes(checkpoint) | notes
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        torch.save(checkpoint, temporary)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
