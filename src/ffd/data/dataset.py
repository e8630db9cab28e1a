"""The samples a loader yields: (path, label) pairs decoded into sample dicts, the distributed sampler that
marks its padding, and the collate function that drops unreadable files into ``batch["bad"]``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler

from ffd.images import UnreadableImageError, read_rgb


class FaceImages(Dataset):
    """(path, label) pairs -> sample dicts; an unreadable file gives {"path", "bad"} instead of raising.

    Keyed by index, or by (index, repeat) from `MarkedPaddingSampler`; a repeat's sample says so."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: torch.nn.Module) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, bool]) -> dict[str, Any]:
        i, repeat = key if isinstance(key, tuple) else (key, False)
        path, label = self.samples[i]
        try:
            image = read_rgb(path)
        except UnreadableImageError as error:
            return {"path": path, "bad": error.reason}
        return {"image": self.transform(image), "label": label, "path": path, "repeat": repeat}


class MarkedPaddingSampler(DistributedSampler):
    """Lightning's evaluation sampler under DDP (the same shares, in the same order) that marks its padding.

    DistributedSampler repeats the first images of a split whose size does not divide by the process count,
    so that every process runs as many batches (DDP's forward is a collective); counted, those copies would
    skew the logged val/test metrics. This yields ``(index, repeat)``, ``repeat`` True for the copies: the
    model leaves them out of its loss, metrics and outputs."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[tuple[int, bool]]:
        size = len(self.dataset)
        # The k-th index of this process is place rank + k * num_replicas of the padded list.
        for k, index in enumerate(super().__iter__()):
            yield index, self.rank + k * self.num_replicas >= size


def collate_faces(samples: Sequence[dict[str, Any]], image_size: int) -> dict[str, Any]:
    """Stack the readable samples, sampler repeats last; list the unreadable ones as (path, reason) in
    "bad"."""
    good = sorted((s for s in samples if "bad" not in s), key=lambda s: s["repeat"])  # stable
    if good:
        images = torch.stack([s["image"] for s in good])
    else:
        images = torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
    return {
        "image": images,
        "label": torch.tensor([s["label"] for s in good], dtype=torch.float32),
        "path": [s["path"] for s in good],
        "bad": [(s["path"], s["bad"]) for s in samples if "bad" in s],
        "repeats": sum(s["repeat"] for s in good),
    }
