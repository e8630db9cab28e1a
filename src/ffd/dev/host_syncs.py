"""Find what in a training step makes the host wait for the GPU, on a GPU or on a CPU.

A GPU runs at its own pace only while Python queues work ahead of it. Reading a value back (``.item()``,
``float(t)``, ``if t:``), an operation whose output size depends on the data (``nonzero``, boolean masks,
``unique``) or a tensor built from Python data and copied to the GPU each wait for every queued kernel;
the GPU then idles while Python prepares the next step. Profiled on an H200, the ViT's training loop
waited 4.6 times per step and kept the GPU busy 79% of the time; once the waits found here were removed,
0.1 times per step (the progress bar and the logger, once per logging period).

On a GPU, ``torch.cuda.set_sync_debug_mode`` reports the real waits. On a CPU nothing waits, so the same
operations are recorded as they are dispatched (a ``TorchDispatchMode``): what would wait on a GPU,
found by a test on any machine. What that CPU view cannot see: ``.tolist()`` and ``.numpy()`` (they read
memory without dispatching an operation) and copies between devices. Left out on a CPU: what runs while
the DataLoader fetches a batch (on a GPU machine, in the worker processes) and ``CPU_ONLY_READS``.
"""

from __future__ import annotations

import json
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils._python_dispatch import TorchDispatchMode

# aten operations that make the host wait for the device's result, and why
WAITING_OPS = {
    "_local_scalar_dense": "reads a value on the host (.item(), float(t), bool(t), if t)",
    "is_nonzero": "reads a value on the host (bool(t), if t)",
    "equal": "reads a value on the host (torch.equal)",
    "nonzero": "output size depends on the data (nonzero)",
    "index": "output size depends on the data (indexing with a boolean mask)",
    "index_put": "reads the mask on the host (assigning through a boolean mask)",
    "masked_select": "output size depends on the data (boolean mask)",
    "_unique2": "output size depends on the data (unique)",
    "unique_dim": "output size depends on the data (unique)",
    "unique_consecutive": "output size depends on the data (unique_consecutive)",
    "lift_fresh": "a tensor built from Python data (on a GPU: a copy from pageable memory)",
}


# Functions that read a value back on a CPU only: on a GPU they take a branch that waits for nothing.
CPU_ONLY_READS = {
    # torchmetrics >= 1.6: `if not torch.all(0 <= t <= 1)` on a CPU, `torch.where(...)` on other devices
    ("torchmetrics/utilities/compute.py", "normalize_logits_if_needed"),
}


def _call_site(
    stack: traceback.StackSummary,
    skip: tuple[str, ...] = ("/torch/", "/ffd/dev/host_syncs.py"),
    depth: int = 3,
) -> str:
    """The innermost frames outside torch, innermost first: the line to change and what called it."""
    sites = []
    for frame in reversed(stack):
        path = frame.filename.replace("\\", "/")
        if not any(part in path for part in skip) or "/torch/optim/" in path:
            sites.append(f"{_short(path)}:{frame.lineno} ({frame.name})")
            if len(sites) == depth:
                break
    return " <- ".join(sites) or "torch internals"


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _waits_on_a_gpu_too(stack: traceback.StackSummary) -> bool:
    """False inside the DataLoader's fetch (worker processes on a GPU machine) and CPU_ONLY_READS."""
    for frame in stack:
        path = frame.filename.replace("\\", "/")
        if "/torch/utils/data/" in path or any(
            path.endswith(file) and frame.name == function for file, function in CPU_ONLY_READS
        ):
            return False
    return True


def _has_boolean_index(args: Any) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class _DispatchRecorder(TorchDispatchMode):
    """Records every waiting operation dispatched on this thread, with its call site."""

    def __init__(self, counts: Counter[tuple[str, str]]) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.__name__.split(".")[0].rstrip("_")
        if name in ("index", "index_put") and not _has_boolean_index(args):
            name = ""  # integer indices: the output size is known without reading them
        if name in WAITING_OPS:
            stack = traceback.extract_stack()
            if _waits_on_a_gpu_too(stack):
                self.counts[(name, _call_site(stack))] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def record_host_syncs(device: torch.device | str) -> Iterator[Counter[tuple[str, str]]]:
    """Count the host waits in the block, by (operation, call site): real ones on a CUDA device (the sync
    debug mode's warnings), the operations that would wait on a GPU otherwise."""
    counts: Counter[tuple[str, str]] = Counter()
    if torch.device(device).type == "cuda":
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield counts
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        for warning in caught:
            if "synchronizing CUDA operation" in str(warning.message):
                counts[("cuda sync", f"{_short(warning.filename)}:{warning.lineno}")] += 1
    else:
        with _DispatchRecorder(counts):
            yield counts


class HostSyncAudit(Callback):
    """Counts the host waits of ``steps`` training steps from ``start_step`` on (a step: from one
    ``on_train_batch_start`` to the next, so the next batch's transfer and GPU augmentation count too).

    ``per_step`` and ``sites`` hold the result once the steps have run; ``result_path``, if given, gets
    them as JSON. On a CPU, the DataLoader must run in worker processes (``data.num_workers`` >= 1) to see
    the step as a GPU machine runs it.
    """

    def __init__(self, start_step: int = 2, steps: int = 3, result_path: str | Path | None = None) -> None:
        self.start_step = start_step
        self.steps = steps
        self.result_path = Path(result_path) if result_path else None
        self.counts: Counter[tuple[str, str]] = Counter()
        self.audited = 0
        self._recording: Any = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self._recording is None and step == self.start_step:
            self._recording = record_host_syncs(pl_module.device)
            self.counts = self._recording.__enter__()
        elif self._recording is not None:
            self.audited += 1
            if self.audited == self.steps:
                self._stop()

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._recording is not None:  # training ended inside the window: count what ran
            self.audited += 1
            self._stop()

    def _stop(self) -> None:
        self._recording.__exit__(None, None, None)
        self._recording = None
        if self.result_path is not None:
            result = {"steps": self.audited, "per_step": self.per_step, "sites": self.sites}
            self.result_path.write_text(json.dumps(result, indent=2))

    @property
    def per_step(self) -> float | None:
        """Host waits per audited step (None before any step was audited)."""
        return sum(self.counts.values()) / self.audited if self.audited else None

    @property
    def sites(self) -> list[dict[str, Any]]:
        """Where they come from, most frequent first: operation, call site, count per step, why it waits."""
        return [
            {"op": op, "site": site, "per_step": count / max(self.audited, 1), "why": WAITING_OPS.get(op, "")}
            for (op, site), count in self.counts.most_common()
        ]
