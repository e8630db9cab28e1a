"""How many loader workers a process gets (its share of the CPUs, or none beside a model on the CPU), and
the loader options checked before any work."""

from __future__ import annotations

import os
from typing import Any

from ffd.errors import UserError
from ffd.options import count_problem, workers_problem


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which SLURM and containers set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_num_workers(processes: int = 1, model_on_cpu: bool = False) -> int:
    """Loader workers per training process, at most 16.

    With the model on GPUs: each process's share of the CPUs, less one for the process itself
    (``processes``: training processes on this machine, one per GPU). With the model on the CPU, the
    workers take cores from the model's own threads, and PyTorch's threads slow down by an order of
    magnitude when one of their cores is busy (measured on 2 cores: a ViT loop ran 5 images/s with one
    worker, 128 with none). So a quarter of the CPUs, none up to 4.
    """
    cpus = available_cpus()
    if model_on_cpu:
        return min(cpus // 4 if cpus > 4 else 0, 16)
    return max(0, min(_cpu_share(cpus, processes) - 1, 16))


def _cpu_share(cpus: int, processes: int) -> int:
    """This process's CPUs. A task srun started has its own ``--cpus-per-task`` (SLURM often binds the
    task to exactly those, so dividing its affinity again would leave no workers); otherwise the
    processes on this machine share the CPUs this one may run on."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK")
    if per_task and per_task.isdigit() and "SLURM_STEP_ID" in os.environ:
        return min(int(per_task), cpus)
    return cpus // max(processes, 1)


def check_loader_settings(batch_size: Any, num_workers: Any, augment_on: Any) -> None:
    """Refuse loader options that torch would refuse only after the data set is indexed and the model
    built, naming the option."""
    problems = []
    if problem := count_problem(batch_size, "data.batch_size"):
        problems.append(f"{problem} (images per device)")
    if problem := workers_problem(num_workers, "data.num_workers"):
        problems.append(problem)
    if augment_on not in ("cpu", "gpu"):
        problems.append(f"data.augment_on={augment_on} must be cpu or gpu")
    if problems:
        raise UserError("; ".join(problems) + ".")
