"""The export speed goals on this machine: DenseNet121 at 256 px in PyTorch eager, onnxruntime fp32 and int8.

    python benchmarks/export.py [--image-size 256] [--repeats 10] [--rounds 2] [--variants] [--profile]

A freshly built densenet121 (random weights: the same compute as a trained one) goes through ffd.deploy
as `python -m ffd.export` does: fp32 export, int8 quantization (QDQ, per-channel; calibrated here on random
images, as only speed is measured). Prints ms per image at batch 1 and 16 (median of --repeats runs after
warm-up; --rounds interleaved rounds, so a busy machine shows up as rounds that disagree), the file sizes and
the ratios the goals name. --variants also times int8 variants (which ops are quantized, activation type,
QDQ vs QOperator) and counts what onnxruntime really runs: node types of the optimised graph.
--profile adds onnxruntime's per-op-type time at batch 16 for fp32 and the int8 file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from ffd.deploy.convert import export_onnx, model_info
from ffd.deploy.parity import median_ms, torch_predictor
from ffd.deploy.quantize import quantize_int8
from ffd.deploy.session import INPUT_NAME, OUTPUT_NAME
from ffd.models.classifier import DeepfakeClassifier

BATCHES = (1, 16)


def session(path: Path, options: Mapping[str, Any] | None = None) -> ort.InferenceSession:
    settings = ort.SessionOptions()
    settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for name, value in (options or {}).items():
        setattr(settings, name, value)
    return ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])


def runner(sess: ort.InferenceSession) -> Callable[[np.ndarray], np.ndarray]:
    return lambda images: sess.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def optimised_ops(path: Path) -> Counter[str]:
    """Node types of the graph onnxruntime actually runs (after its optimisations), for the CPU."""
    with tempfile.TemporaryDirectory() as folder:
        dumped = Path(folder) / "optimised.onnx"
        session(path, {"optimized_model_filepath": str(dumped)})
        return Counter(node.op_type for node in onnx.load(dumped).graph.node)


def profile(path: Path, images: np.ndarray, runs: int = 3) -> dict[str, float]:
    """Share of the time per op type at this batch, from onnxruntime's profiler."""
    with tempfile.TemporaryDirectory() as folder:  # onnxruntime writes the trace into the cwd otherwise
        sess = session(path, {"enable_profiling": True, "profile_file_prefix": f"{folder}/profile"})
        for _ in range(runs + 1):
            runner(sess)(images)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values()) or 1
    return {op: share / total for op, share in per_op.most_common(8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=32, help="random calibration images")
    parser.add_argument("--variants", action="store_true", help="also time int8 variants for batch 16")
    parser.add_argument("--profile", action="store_true", help="onnxruntime's time per op type at batch 16")
    args = parser.parse_args()
    console = Console(width=140)
    size = args.image_size
    rng = np.random.default_rng(0)
    images = {n: rng.integers(0, 256, (n, 3, size, size)).astype(np.float32) for n in BATCHES}
    model = DeepfakeClassifier(net={"name": "densenet", "pretrained": False, "image_size": size}).eval()
    calibration = rng.integers(0, 256, (args.calibration, 3, size, size)).astype(np.uint8)

    with tempfile.TemporaryDirectory(prefix="ffd-bench-export-") as folder:
        out = Path(folder)
        fp32 = export_onnx(model, out / "fp32.onnx", "benchmark")
        info = model_info(model, "benchmark", "int8")
        files = {
            "onnxruntime fp32": fp32,
            "onnxruntime int8 (ffd)": quantize_int8(fp32, out / "int8.onnx", info, calibration),
        }
        if args.variants:
            from onnxruntime.quantization import QuantFormat, QuantType

            variants: dict[str, dict[str, Any]] = {
                "int8 s8 activations": {"activation_type": QuantType.QInt8},
                "int8 Conv+Gemm only": {"op_types_to_quantize": ["Conv", "Gemm"]},
                "int8 no BatchNorm": {
                    "op_types_to_quantize": ["Conv", "Gemm", "Relu", "MaxPool", "AveragePool", "Concat"]
                },
                "int8 QOperator": {"quant_format": QuantFormat.QOperator},
            }
            for name, overrides in variants.items():
                path = out / (name.replace(" ", "_").replace("+", "_") + ".onnx")
                files[name] = quantize_int8(fp32, path, info, calibration, overrides=overrides)

        predictors = {"PyTorch eager fp32": torch_predictor(model.net)}
        predictors |= {name: runner(session(path)) for name, path in files.items()}
        timings: dict[str, list[dict[int, float]]] = {name: [] for name in predictors}
        for _ in range(args.rounds):
            for name, predict in predictors.items():
                timings[name].append(
                    {
                        n: median_ms(lambda n=n, p=predict: p(images[n]), args.warmup, args.repeats) / n
                        for n in BATCHES
                    }
                )

        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
        machine += f"{torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}"
        table = Table(title=f"densenet121 at {size} px: ms per image (median), rounds 1 / 2 / ...; {machine}")
        for column in ("model", *(f"batch {n}" for n in BATCHES), "file MB", "optimised graph (CPU)"):
            table.add_column(
                column, justify="left" if column in ("model", "optimised graph (CPU)") else "right"
            )
        for name, rounds in timings.items():
            path = files.get(name)
            ops = optimised_ops(path) if path and args.variants else Counter()
            table.add_row(
                name,
                *(" / ".join(f"{r[n]:.1f}" for r in rounds) for n in BATCHES),
                f"{path.stat().st_size / 1e6:.1f}" if path else "",
                ", ".join(f"{op} {count}" for op, count in ops.most_common(6)),
            )
        console.print(table)

        def best(name: str, n: int) -> float:
            return float(np.median([r[n] for r in timings[name]]))

        torch_b1, fp32_b1 = best("PyTorch eager fp32", 1), best("onnxruntime fp32", 1)
        int8 = "onnxruntime int8 (ffd)"
        goals = Table(title="Goals (int8 = the file ffd.export writes)")
        for column in ("figure", "measured", "goal"):
            goals.add_column(column)
        goals.add_row(
            "int8 vs onnxruntime fp32, batch 1", f"{fp32_b1 / best(int8, 1):.2f}x faster", ">= 1.3x"
        )
        goals.add_row("int8 vs PyTorch eager, batch 1", f"{torch_b1 / best(int8, 1):.2f}x faster", ">= 1.8x")
        goals.add_row(
            "int8 size / fp32 size",
            f"{files[int8].stat().st_size / fp32.stat().st_size:.1%}",
            "<= 30%",
        )
        goals.add_row(
            "int8 vs onnxruntime fp32, batch 16",
            f"{best('onnxruntime fp32', 16) / best(int8, 16):.2f}x faster",
            "(investigated)",
        )
        console.print(goals)
        if args.profile:
            for name in ("onnxruntime fp32", int8):
                shares = profile(files[name], images[16])
                console.print(
                    f"{name}, batch 16, time per op type: "
                    + ", ".join(f"{op} {s:.0%}" for op, s in shares.items())
                )


if __name__ == "__main__":
    main()
