"""python -m ffd.serve under load: N concurrent clients for a bounded time, beside ffd.predict's images/s.

    python benchmarks/serve.py [--clients 8] [--seconds 60] [--images 512] [--model vit|densenet]
                               [--batch-size 32] [--max-wait-ms 5] [--device cpu|cuda]

Starts the service as a user does (``python -m ffd.serve model=FILE face=none``) on 127.0.0.1, then each
client thread posts one photo per request to /v1/predict (httpx), round the folder, for ``--seconds``.
Prints the images judged per second, the p50 / p99 latency, the errors (any answer but 200, or none), and
the service's own queue counts (GET /v1/model: mean batch, wait); beside them ffd.predict's steady images/s
on the same folder (benchmarks/predict.py's method: two runs, start-up taken out). Goal: no errors, and
serve / predict >= 0.8. Weights are random (a trained model's compute); the photos are the synthetic set's
faces at the model's size, JPEG quality 95, judged whole (face=none) by both, so that the model, not face
finding, is what both share.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from predict import NETS, SMALL, predict_seconds, write_checkpoint, write_photos  # benchmarks/predict.py
from rich.console import Console
from rich.table import Table


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(model: Path, folder: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """``python -m ffd.serve`` on a free port; returns once /healthz answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "ffd.serve", f"model={model}", f"port={port}", "face=none",
        f"batch_size={args.batch_size}", f"max_wait_ms={args.max_wait_ms}", f"device={args.device}",
        f"hydra.run.dir={folder / 'serve_run'}",
    ]  # fmt: skip
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"ffd.serve exited with {process.returncode}:\n{(folder / 'serve.log').read_text()}"
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit(f"ffd.serve did not answer in 120 s:\n{(folder / 'serve.log').read_text()}")


def drive(url: str, photos: list[bytes], clients: int, seconds: float) -> tuple[list[float], int, float]:
    """``clients`` threads posting one photo each per request until ``seconds`` pass: (latencies of the
    answers that were 200, errors, wall seconds)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(offset: int) -> None:
        with httpx.Client(timeout=120) as session:
            k = offset
            while time.perf_counter() < stop:
                body = {"files": (f"{k % len(photos)}.jpg", photos[k % len(photos)], "image/jpeg")}
                started = time.perf_counter()
                try:
                    ok = session.post(f"{url}/v1/predict", files=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - started
                with lock:
                    if ok:
                        latencies.append(took)
                    else:
                        errors[0] += 1
                k += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--images", type=int, default=512, help="photos in the folder (ffd.predict's input)")
    parser.add_argument("--model", choices=sorted(NETS), default="vit")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="ffd.predict num_workers")
    args = parser.parse_args()
    net = NETS[args.model]
    size = net["image_size"]
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        console.print(f"Writing {args.images} + {SMALL} JPEGs of {size} px and a random {args.model} ...")
        small_photos = write_photos(tmp / "small", SMALL, size, seed=1)
        folder = write_photos(tmp / "photos", args.images, size)
        model = tmp / "model.ckpt"
        write_checkpoint(net, model)
        small = predict_seconds(small_photos, model, tmp / "out_small", args)
        whole = predict_seconds(folder, model, tmp / "out", args)
        predict_rate = (args.images - SMALL) / (whole - small)
        console.print(f"ffd.predict: {predict_rate:.1f} images/s")
        photos = [path.read_bytes() for path in sorted(folder.rglob("*.jpg"))]
        process, url = start_service(model, tmp, args)
        try:
            drive(url, photos[: args.clients * 2], args.clients, 3.0)  # warm-up: threads, first batches
            before = httpx.get(f"{url}/v1/model").json()["batching"]
            latencies, errors, wall = drive(url, photos, args.clients, args.seconds)
            queue = httpx.get(f"{url}/v1/model").json()["batching"]
        finally:
            process.terminate()
            process.wait(timeout=30)
    batches = queue["batches"] - before["batches"]
    mean_batch = (queue["images"] - before["images"]) / batches if batches else 0.0
    rate = len(latencies) / wall
    p50, p99 = (1000 * np.percentile(latencies, q) if latencies else float("nan") for q in (50, 99))
    table = Table(title=f"ffd.serve under load: {args.model} {size} px, {args.clients} clients, {wall:.0f} s")
    for column in ("serve images/s", "p50 ms", "p99 ms", "errors", "mean batch", "predict images/s"):
        table.add_column(column, justify="right")
    table.add_column("serve / predict", justify="right")
    table.add_row(
        f"{rate:.1f}", f"{p50:.0f}", f"{p99:.0f}", str(errors), f"{mean_batch:.1f}", f"{predict_rate:.1f}",
        f"{rate / predict_rate:.2f}",
    )  # fmt: skip
    console.print(table)
    console.print(
        f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), device {args.device}; {len(latencies)} requests of one photo answered, batch_size "
        f"{args.batch_size}, max_wait_ms {args.max_wait_ms:g}; clients and service on the same machine."
    )


if __name__ == "__main__":
    main()
