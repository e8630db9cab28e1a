"""Images/s of BatchAugment + the model's Normalize, with the augmented batch as uint8 or as float32.

    python benchmarks/augment_output.py [--device cuda] [--size 256] [--batch 64] [--rounds 5]

This is the device-side data path of augment_on=gpu, the part that data.augment_output changes: with
"uint8" BatchAugment rounds, clamps and casts back to uint8, and Normalize casts to float again; with
"float32" it keeps the rounded floats (the same values) and Normalize skips its cast. The two variants take
turns for --rounds rounds, and each keeps its best round, so that a noisy machine slows both alike. The
ratio is float32 over uint8: above 1 means the float32 output is faster.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from ffd.data.gpu_augment import OUTPUTS, BatchAugment
from ffd.models.preprocess import Normalize


def seconds_per_batch(
    augment: BatchAugment, normalize: Normalize, images: torch.Tensor, batches: int
) -> float:
    """Wall time of `batches` augment + normalize passes over `images`, per batch, the device drained."""
    synchronize = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        normalize(augment(images))
    synchronize()
    return (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (the Kaggle files: 256)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (conf/data/kaggle.yaml: 64)")
    parser.add_argument(
        "--batches", type=int, default=None, help="batches per round (default: 100 on a GPU, 3)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant, taken in turns")
    args = parser.parse_args()
    device = torch.device(args.device)
    batches = args.batches or (100 if device.type == "cuda" else 3)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=device)
    normalize = Normalize().to(device)
    variants = {output: BatchAugment(output=output) for output in OUTPUTS}
    best = dict.fromkeys(OUTPUTS, float("inf"))
    for augment in variants.values():  # warm-up: allocator, kernels, thread pools
        seconds_per_batch(augment, normalize, images, 1)
    for _ in range(args.rounds):
        for output, augment in variants.items():
            best[output] = min(best[output], seconds_per_batch(augment, normalize, images, batches))

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    table = Table(title=f"BatchAugment + Normalize on {name}: {args.size} px, batch {args.batch}")
    for column in ("data.augment_output", "ms per batch", "images/s", "vs uint8"):
        table.add_column(column, justify="left" if column.startswith("data") else "right")
    for output in OUTPUTS:
        table.add_row(
            output,
            f"{best[output] * 1e3:.2f}",
            f"{args.batch / best[output]:,.0f}",
            f"{best['uint8'] / best[output]:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
