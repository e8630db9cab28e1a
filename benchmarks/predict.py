"""ffd.predict's images/s over a folder of generated 256 px JPEGs, against the bare model on the same batches.

    python benchmarks/predict.py [--images 20000] [--model vit|densenet] [--batch-size 32]
                                 [--runtimes ckpt,fp32,int8] [--device cpu|cuda] [--workers N]
                                 [--photos DIR]

For each model file (a .ckpt, and the fp32 and int8 .onnx files ffd.export would write from it) this runs
the user's command, ``python -m ffd.predict input=DIR model=FILE face=none``, twice: on a small folder and
on the whole one, and takes the difference, so that Python's, torch's and the model's start-up (paid once
per command) is left out of the steady rate. The bare figure is the same Detector's batched call
(``ffd.inference.open_detector(...).run``, the model and its input normalisation) on already decoded
uint8 batches of the same size, on the same device: what ffd.predict would reach if decoding, batching and
writing cost nothing. The goal is predict / bare >= 0.8 on each device.

Weights are random (the same compute as a trained model's); the photos are the synthetic set's faces, drawn
at 256 px and saved as JPEG quality 95 as the Kaggle files are (``ffd.data.synthetic``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ffd.data.synthetic import SPLIT_FOLDERS, generate
from ffd.deploy.convert import export_onnx, model_info
from ffd.deploy.quantize import quantize_int8
from ffd.inference import open_detector
from ffd.models.classifier import DeepfakeClassifier

NETS = {
    "vit": {"name": "vit", "image_size": 256},
    "densenet": {"name": "densenet", "image_size": 256, "pretrained": False},
}
SMALL = 64  # photos in the start-up run


def write_photos(root: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` of the synthetic set's faces (half real, half fake) under `root`, written on every core by
    ``ffd.data.synthetic.generate``, which reuses a set complete from an earlier run with the same
    settings; returns the folder that holds them."""
    generate(root, size, train=count, val=0, test=0, seed=seed, workers=os.cpu_count() or 1)
    return root / SPLIT_FOLDERS["train"]


def write_checkpoint(net: dict, path: Path) -> DeepfakeClassifier:
    """A checkpoint as ffd.train writes one (Lightning's format, the model's hyper-parameters), after one
    step on two random images."""
    model = DeepfakeClassifier(net=net)
    size = net["image_size"]
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    samples = [{"image": images[k], "label": torch.tensor(float(k))} for k in range(2)]
    batches = torch.utils.data.DataLoader(samples, batch_size=2)
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, batches)
    trainer.save_checkpoint(path, weights_only=False)  # the whole file, as ffd.train writes it
    return model.eval()


def model_files(net: dict, folder: Path, runtimes: list[str]) -> dict[str, Path]:
    """{runtime: file}: the .ckpt, and the fp32 / int8 ONNX files exported from it as ffd.export does."""
    checkpoint = folder / "model.ckpt"
    model = write_checkpoint(net, checkpoint)
    files = {"ckpt": checkpoint}
    if "fp32" in runtimes or "int8" in runtimes:
        files["fp32"] = export_onnx(model, folder / "model_fp32.onnx", "benchmark")
    if "int8" in runtimes:
        size = net["image_size"]
        calibration = np.random.default_rng(0).integers(0, 256, (16, 3, size, size), dtype=np.uint8)
        info = model_info(model, "benchmark", "int8")
        files["int8"] = quantize_int8(files["fp32"], folder / "model_int8.onnx", info, calibration)
    return {name: files[name] for name in runtimes}


def predict_seconds(photos: Path, model: Path, out: Path, args: argparse.Namespace) -> float:
    """Wall seconds of one ``python -m ffd.predict`` over ``photos`` (start-up included)."""
    command = [
        sys.executable,
        "-m",
        "ffd.predict",
        f"input={photos}",
        f"model={model}",
        "face=none",
        f"batch_size={args.batch_size}",
        f"device={args.device}",
        f"output={out}",
        "overwrite=true",
        f"hydra.run.dir={out / 'run'}",
    ]
    if args.workers is not None:
        command.append(f"num_workers={args.workers}")
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    return time.perf_counter() - started


def bare_images_per_second(model: Path, args: argparse.Namespace, size: int) -> float:
    """The detector's batched call alone, on decoded uint8 batches: images/s (median of 5 timed rounds)."""
    detector = open_detector(model, args.device)
    batch = torch.randint(0, 256, (args.batch_size, 3, size, size), dtype=torch.uint8)
    rounds = max(2, min(20, 512 // args.batch_size))
    for _ in range(2):
        detector.run(batch)
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            detector.run(batch)
        seconds.append(time.perf_counter() - started)
    return rounds * args.batch_size / float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--model", choices=sorted(NETS), default="vit")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtimes", default="ckpt,fp32,int8")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="ffd.predict num_workers")
    parser.add_argument(
        "--photos",
        type=Path,
        help="write the photos under this folder (the synthetic set's layout) and reuse them in later runs",
    )
    args = parser.parse_args()
    runtimes = [name.strip() for name in args.runtimes.split(",") if name.strip()]
    if unknown := set(runtimes) - {"ckpt", "fp32", "int8"}:
        parser.error(f"--runtimes: unknown {sorted(unknown)}; choose from ckpt, fp32, int8")
    net = NETS[args.model]
    size = net["image_size"]
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = write_photos(args.photos or tmp / "photos", args.images, size)
        small_photos = write_photos(tmp / "small", SMALL, size, seed=1)
        files = model_files(net, tmp, runtimes)
        table = Table(title=f"ffd.predict vs the bare model: {args.model} {size} px, batch {args.batch_size}")
        for column in ("model file", "predict images/s", "with start-up", "start-up s", "bare images/s"):
            table.add_column(column, justify="right")
        table.add_column("predict / bare", justify="right")
        for name, file in files.items():
            small = predict_seconds(small_photos, file, tmp / f"out_{name}_small", args)
            whole = predict_seconds(photos, file, tmp / f"out_{name}", args)
            steady = (args.images - SMALL) / (whole - small)
            startup = small - SMALL / steady
            bare = bare_images_per_second(file, args, size)
            table.add_row(
                name,
                f"{steady:.1f}",
                f"{args.images / whole:.1f}",
                f"{startup:.1f}",
                f"{bare:.1f}",
                f"{steady / bare:.2f}",
            )
            console.print(f"{name}: predict {steady:.1f} images/s, bare {bare:.1f}")
        console.print(table)
    threads = torch.get_num_threads()
    console.print(
        f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), "
        f"device {args.device}, {args.images} photos; steady rate = (N - {SMALL}) / (T(N) - T({SMALL}))."
    )


if __name__ == "__main__":
    main()
