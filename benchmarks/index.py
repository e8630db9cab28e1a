"""Start-up time of indexing a Kaggle-sized folder tree: listing the files, checking each one's first bytes.

    python benchmarks/index.py [--per-class 50000 10000 10000] [--root /tmp/ffd-index-bench]

Writes the Kaggle layout (``real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}``, 140,000 files by
default, one 16 px JPEG copied) once under ``--root``, then times ``ffd.data.index.index_dataset`` twice:
the first run after dropping the page cache when this process may (root on Linux: a cold disk), the
second on a warm cache. Prints the seconds and files per second of each.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torchvision.io import encode_jpeg

from ffd.data.index import index_dataset

SPLITS = ("train", "valid", "test")


def write_tree(root: Path, per_class: dict[str, int]) -> int:
    """The layout with ``per_class[split]`` files in each class folder (kept if already complete)."""
    jpeg = encode_jpeg(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)).numpy().tobytes()
    base = root / "real_vs_fake" / "real-vs-fake"
    for split, count in per_class.items():
        for name in ("real", "fake"):
            folder = base / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(len(os.listdir(folder)), count):
                (folder / f"{i:06d}.jpg").write_bytes(jpeg)
    return 2 * sum(per_class.values())


def drop_page_cache() -> bool:
    """Empty Linux's page, dentry and inode caches; False where this process may not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, nargs=3, default=[50000, 10000, 10000], metavar="N")
    parser.add_argument("--root", type=Path, default=Path("/tmp/ffd-index-bench"))
    args = parser.parse_args()
    files = write_tree(args.root, dict(zip(SPLITS, args.per_class, strict=True)))
    table = Table(title=f"index_dataset on {files:,} files in {args.root}")
    for column in ("run", "seconds", "files/s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for run in ("first", "second"):
        label = "cold cache" if run == "first" and drop_page_cache() else f"{run} run, warm cache"
        start = time.perf_counter()
        index = index_dataset(args.root)
        seconds = time.perf_counter() - start
        assert sum(len(rows) for rows in index.samples.values()) == files, "files were lost"
        table.add_row(label, f"{seconds:.1f}", f"{files / seconds:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
