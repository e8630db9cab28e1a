"""Requests that arrive together go through the model as one batch: a small queue with a maximum wait.

A model call costs little more for 16 images than for one, and on a CPU most of a lone image's call is the
call. The first request waits at most ``max_wait_ms`` for others (taking at once whatever is queued), up to
``batch_size`` images, and one thread runs the model, so that a batch never races another (nor Grad-CAM's
hooks, which run on the same thread). What the queue did is counted: the service's /v1/model shows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


@dataclass
class Pending:
    images: torch.Tensor  # (N, 3, S, S) uint8: one request's faces or photos
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the queue did since start: batches run, images and requests in them, time waited and run."""

    batches: int = 0
    images: int = 0
    requests: int = 0
    largest: int = 0
    wait_s: float = 0.0  # summed over requests: queued until their batch started
    run_s: float = 0.0  # summed over batches: the model's time

    def record(self, batch: list[Pending], started: float, ended: float) -> None:
        size = sum(len(pending.images) for pending in batch)
        self.batches += 1
        self.images += size
        self.requests += len(batch)
        self.largest = max(self.largest, size)
        self.wait_s += sum(started - pending.queued for pending in batch)
        self.run_s += ended - started

    def summary(self) -> dict[str, float]:
        """The counts, with means per batch and per request (milliseconds)."""
        return {
            "batches": self.batches,
            "images": self.images,
            "requests": self.requests,
            "largest_batch": self.largest,
            "mean_batch": round(self.images / self.batches, 2) if self.batches else 0.0,
            "mean_wait_ms": round(1000 * self.wait_s / self.requests, 2) if self.requests else 0.0,
            "mean_run_ms": round(1000 * self.run_s / self.batches, 2) if self.batches else 0.0,
        }


class Batcher:
    """``await batcher(images)`` -> P(fake) per image, judged in a batch with whatever else is queued.

    ``run``: (N, 3, S, S) uint8 -> (N,) P(fake), the Detector's call. ``start`` in the event loop that
    will call it, ``stop`` at shutdown."""

    def __init__(
        self, run: Callable[[torch.Tensor], np.ndarray], batch_size: int, max_wait_ms: float
    ) -> None:
        self.run, self.batch_size, self.max_wait = run, batch_size, max_wait_ms / 1000
        self.stats = BatchStats()
        self.executor: ThreadPoolExecutor | None = None
        self.queue: asyncio.Queue[Pending] | None = None
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="ffd-model")
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.queue = self.task = self.executor = None

    async def __call__(self, images: torch.Tensor) -> np.ndarray:
        assert self.queue is not None, "Batcher.start() first, in the event loop that calls it"
        pending = Pending(images, asyncio.get_running_loop().create_future())
        await self.queue.put(pending)
        return await pending.future

    async def on_model_thread(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work`` on the model's thread, between batches (Grad-CAM: hooks on the model)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    def _take_queued(self, batch: list[Pending]) -> None:
        assert self.queue is not None
        while not self.queue.empty() and sum(len(p.images) for p in batch) < self.batch_size:
            batch.append(self.queue.get_nowait())

    async def _loop(self) -> None:
        assert self.queue is not None
        while True:
            batch = [await self.queue.get()]
            self._take_queued(batch)
            if sum(len(p.images) for p in batch) < self.batch_size and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
                self._take_queued(batch)
            batch = [pending for pending in batch if not pending.future.done()]  # a timed-out request
            if not batch:
                continue
            started = time.perf_counter()
            try:
                probs = await self.on_model_thread(self.run, torch.cat([p.images for p in batch]))
            except Exception as error:  # every request of the batch gets it; the queue keeps serving
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            self.stats.record(batch, started, time.perf_counter())
            start = 0
            for pending in batch:
                end = start + len(pending.images)
                if not pending.future.done():
                    pending.future.set_result(probs[start:end])
                start = end
