"""Milliseconds per image for each segmentation backend on this machine (median over >= 20 images).

    python benchmarks/segment.py [--images 24] [--device cpu]

The images are variations (crops, scales, mirror) of the astronaut and Grace Hopper photos, decoded once
beforehand: the figures are the backend's own work, model plus annotation, as `python -m ffd.segment` runs it
per image. Without the real BiSeNet file, parsing is timed with a freshly built BiSeNet of the same shape
(same compute, meaningless labels) and the table says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from matplotlib import cbook
from rich.console import Console
from rich.table import Table
from skimage import data as skdata
from torchvision.transforms.v2 import functional as TF

from ffd import assets
from ffd.images import read_rgb
from ffd.segmentation.landmarks import FaceLandmarker
from ffd.segmentation.parsing import PARSING_CLASSES, FaceParser
from ffd.segmentation.pipeline import Annotation, Backend, landmarks_backend, parsing_backend, regions_backend


def photos(count: int) -> list[torch.Tensor]:
    """count images: the two photos, mirrored or not, at four scales, some cropped to the face's half."""
    bases = [
        torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).contiguous(),
        read_rgb(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
    ]
    images = []
    for index in range(count):
        image = bases[index % 2]
        if index // 2 % 2:
            image = TF.horizontal_flip(image)
        scale = (0.75, 1.0, 1.25, 1.5)[index // 4 % 4]
        image = TF.resize(
            image, [round(image.shape[1] * scale), round(image.shape[2] * scale)], antialias=True
        )
        if index // 16 % 2:
            image = image[:, : image.shape[1] * 2 // 3].contiguous()
        images.append(image)
    return images


def time_backend(backend: Backend, images: list[torch.Tensor], warmup: int = 2) -> list[float]:
    for image in images[:warmup]:
        backend(image, image.shape[2], image.shape[1])
    times = []
    for image in images:
        start = time.perf_counter()
        backend(image, image.shape[2], image.shape[1])
        times.append((time.perf_counter() - start) * 1e3)
    return times


def detect_only(landmarker: FaceLandmarker) -> Backend:
    """The landmarker alone, no drawing: what the other two landmark backends add to it is annotation."""
    return lambda image, width, height: Annotation(image, {"faces": len(landmarker.detect(image))})


def bisenet_weights(folder: Path) -> tuple[Path, str]:
    """The real file if it is in the cache, else a freshly built BiSeNet's state dict (timing only)."""
    try:
        return assets.ensure("parsing_bisenet.pth", allow_download=False), "facexlib release"
    except assets.AssetError:
        from facexlib.parsing.bisenet import BiSeNet

        path = folder / "parsing_bisenet.pth"
        torch.save(BiSeNet(num_class=len(PARSING_CLASSES)).state_dict(), path)
        return path, "random init (timing only)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="for parsing"
    )
    args = parser.parse_args()
    images = photos(args.images)
    sizes = sorted({f"{image.shape[2]}x{image.shape[1]}" for image in images})
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
    machine += f"{torch.get_num_threads()}, parsing on {args.device}"
    table = Table(title=f"ffd.segment backends: ms per image ({len(images)} images, {machine})")
    for column in ("backend", "median ms", "p90 ms", "images/s", "weights"):
        table.add_column(column, justify="left" if column in ("backend", "weights") else "right")

    def add(name: str, times: list[float], weights: str) -> None:
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1]
        table.add_row(name, f"{median:.1f}", f"{p90:.1f}", f"{1e3 / median:.1f}", weights)

    with FaceLandmarker(assets.ensure("face_landmarker.task")) as landmarker:
        add("MediaPipe detect only", time_backend(detect_only(landmarker), images), "face_landmarker.task")
        add(
            "landmarks",
            time_backend(landmarks_backend(landmarker, mesh=False), images),
            "face_landmarker.task",
        )
        add("regions", time_backend(regions_backend(landmarker, alpha=0.5), images), "face_landmarker.task")
    with tempfile.TemporaryDirectory() as folder:
        weights, origin = bisenet_weights(Path(folder))
        sha256 = assets.sha256_of(weights)
        face_parser = FaceParser(
            assets.ensure("parsing_bisenet.pth", path=weights, sha256=sha256), args.device
        )
        add("parsing (BiSeNet 512)", time_backend(parsing_backend(face_parser, alpha=0.5), images), origin)
    Console().print(table)
    Console().print(f"image sizes: {', '.join(sizes)}")


if __name__ == "__main__":
    main()
