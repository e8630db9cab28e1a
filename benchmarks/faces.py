"""python benchmarks/faces.py [--photos 48] [--net vit|densenet] [--size 256]

Face finding and alignment speed, and what it costs ffd.predict:
(a) faces/s of detection + alignment alone (FaceFinder.find on each photo: MediaPipe's landmarker, the
    FFHQ-style transform and the warp of every face);
(b) images/s of ffd.predict face=align against face=none on the same photos and model, as a ratio.

The photos are the two offline portraits (scikit-image's astronaut, matplotlib's Grace Hopper) pasted into
640x400 canvases at random scales, angles and places, one or two faces each; the model is a randomly
initialised network written as an ffd checkpoint (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from matplotlib import cbook
from rich.console import Console
from skimage import data as skdata
from torchvision.io import write_jpeg
from torchvision.transforms.v2 import functional as TF

from ffd import assets
from ffd.faces.align import FaceFinder
from ffd.images import read_rgb
from ffd.inference import predict
from ffd.models.classifier import DeepfakeClassifier


def portraits() -> list[torch.Tensor]:
    """The two heads, square: MediaPipe sees a photo at 128 px, so a face must span a fifth of it."""
    astronaut = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[:, 0:300, 100:400].contiguous()
    grace = read_rgb(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))[:, 0:480, 16:496]
    return [astronaut, grace]


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` canvases of 640x400 with one or two heads each, rotated ±25° and scaled."""
    rng = np.random.default_rng(seed)
    faces, paths = portraits(), []
    for index in range(count):
        canvas = torch.full((3, 400, 640), int(rng.integers(40, 200)), dtype=torch.uint8)
        placed = 1 + index % 2
        for slot in range(placed):
            side = int(rng.integers(300, 380 if placed == 1 else 320))
            face = TF.resize(faces[(index + slot) % 2], [side, side], antialias=True)
            face = TF.rotate(face, float(rng.uniform(-25, 25)))
            left = int(rng.integers(0, 640 // placed - side + 1)) + slot * 640 // placed
            top = int(rng.integers(0, 400 - side + 1))
            canvas[:, top : top + side, left : left + side] = face
        paths.append(folder / f"photo_{index:03d}.jpg")
        write_jpeg(canvas, str(paths[-1]), quality=92)
    return paths


def checkpoint(folder: Path, net: str, size: int) -> Path:
    """A randomly initialised detector saved as ffd.train would (weights and network description)."""
    description = {"name": net, "image_size": size} | ({"pretrained": False} if net == "densenet" else {})
    model = DeepfakeClassifier(net=description)
    path = folder / f"{net}.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--net", choices=("vit", "densenet"), default="vit")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    landmarker = assets.ensure("face_landmarker.task")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        (folder / "photos").mkdir()
        paths = write_photos(folder / "photos", args.photos)
        images = [read_rgb(path) for path in paths]
        with FaceFinder(landmarker, args.size) as finder:
            finder.find(images[0])  # warm-up: the graph's first run
            start = time.perf_counter()
            found = sum(len(finder.find(image).faces) for image in images)
            seconds = time.perf_counter() - start
        print(f"(a) detection + alignment: {found} faces in {len(images)} photos, {seconds:.2f} s: "
              f"{found / seconds:.1f} faces/s, {1000 * seconds / len(images):.1f} ms per photo")  # fmt: skip
        model = checkpoint(folder, args.net, args.size)
        rates = {}
        for mode in ("none", "align", "none", "align"):  # interleaved: the second of each pair counts
            finder_for = partial(FaceFinder, landmarker) if mode != "none" else None
            start = time.perf_counter()
            run = predict(folder / "photos", model, folder / f"out_{mode}_{len(rates)}", face=mode,
                          finder=finder_for, overwrite=True, console=Console(file=io.StringIO()))  # fmt: skip
            seconds = time.perf_counter() - start
            rates[mode] = (len(paths) / seconds, len(run.rows))
        for mode, (rate, rows) in rates.items():
            print(f"(b) ffd.predict face={mode}: {rate:.1f} photos/s ({rows} verdicts, net {args.net}, "
                  f"{args.size} px, {torch.get_num_threads()} threads)")  # fmt: skip
        print(f"    face=align costs {rates['none'][0] / rates['align'][0]:.2f}x face=none per photo")


if __name__ == "__main__":
    main()
