"""Images/s of the training augmentation with data.augment.blur_jpeg_prob at 0 and 0.5, on this CPU.

    python benchmarks/blur_jpeg.py [--size 256] [--images 256]

"cpu" is the augment_on=cpu pipeline per image (ffd.data.transforms.train_transform); "gpu" is what
augment_on=gpu does, run here on the CPU: the workers' resize + blur/JPEG per image, then BatchAugment on
the batch. Both at the reference settings. The ratio is each row's speed over its own path at prob 0.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from ffd.data.gpu_augment import BatchAugment
from ffd.data.transforms import train_transform, worker_steps


def images_per_s(run: Callable[[], None], count: int, repeats: int = 3) -> float:
    """The best of ``repeats`` timed runs of ``run`` (which augments ``count`` images), after a warm-up."""
    run()
    best = min(_seconds(run) for _ in range(repeats))
    return count / best


def _seconds(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (the Kaggle files: 256)")
    parser.add_argument("--images", type=int, default=256, help="images per timed run")
    args = parser.parse_args()
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    batch_augment = BatchAugment()

    def cpu_path(prob: float) -> Callable[[], None]:
        transform = train_transform(args.size, blur_jpeg_prob=prob)

        def run() -> None:
            for image in images:
                transform(image)

        return run

    def gpu_path(prob: float) -> Callable[[], None]:
        workers = torch.nn.Sequential(*worker_steps(args.size, prob))

        def run() -> None:
            batch_augment(torch.stack([workers(image) for image in images]))

        return run

    table = Table(title=f"Training augmentation, {args.size} px, {torch.get_num_threads()} torch thread(s)")
    for column in ("path (augment_on)", "blur_jpeg_prob", "images/s", "vs prob 0"):
        table.add_column(column, justify="left" if column.startswith("path") else "right")
    for name, path in (("cpu", cpu_path), ("gpu (run on the CPU)", gpu_path)):
        base = images_per_s(path(0.0), args.images)
        for prob in (0.0, 0.5):
            speed = base if prob == 0 else images_per_s(path(prob), args.images)
            table.add_row(name, f"{prob:g}", f"{speed:,.0f}", f"{speed / base:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
