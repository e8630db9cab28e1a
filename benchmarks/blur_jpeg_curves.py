"""Does CNNDetection's blur + JPEG augmentation make a detector degrade less under JPEG and blur?

    python benchmarks/blur_jpeg_curves.py [--work DIR] [--probs 0 0.5] [TRAIN_OVERRIDE ...]

Trains the quickstart ViT (``experiment=quickstart model=vit``: the synthetic set, 3 epochs, same seed)
once per ``data.augment.blur_jpeg_prob``, scores each best checkpoint with ``ffd.eval robustness=default``
and draws docs/images/blur_jpeg_curves.png: test AUROC against JPEG quality and against blur sigma, one
line per model. Extra arguments go to ffd.train and ffd.eval alike (e.g. ``data.synthetic.train=4000``).
The rows are also written to DIR/blur_jpeg_curves.json and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "images" / "blur_jpeg_curves.png"
PANELS = {"jpeg": "JPEG quality (harsher →)", "blur": "Gaussian blur sigma, px (harsher →)"}


def ffd(task: str, run_dir: Path, work: Path, overrides: list[str]) -> None:
    """``python -m ffd.<task>`` with its run folder at ``run_dir`` and the data under ``work``/data."""
    command = [sys.executable, "-m", f"ffd.{task}", f"hydra.run.dir={run_dir}", *overrides]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "FFD_ROOT": str(work)})


def train_and_score(prob: float, work: Path, extra: list[str]) -> list[dict]:
    """Train with blur_jpeg_prob=``prob``, evaluate the best checkpoint under robustness=default."""
    train_dir, eval_dir = work / f"train_p{prob:g}", work / f"eval_p{prob:g}"
    ffd(
        "train",
        train_dir,
        work,
        ["experiment=quickstart", "model=vit", f"data.augment.blur_jpeg_prob={prob}", *extra],
    )
    # epochNNN-aurocX.XXXX.ckpt: the best validation AUROC (the latest epoch on a tie)
    best = max(
        sorted((train_dir / "checkpoints").glob("epoch*.ckpt")), key=lambda p: float(p.stem.split("auroc")[1])
    )
    ffd("eval", eval_dir, work, [f"ckpt_path={best}", "data=synthetic", "robustness=default", *extra])
    return json.loads((eval_dir / "robustness.json").read_text())["rows"]


def draw(results: dict[float, list[dict]]) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(8, 3.4), dpi=120)
    for ax, (name, label) in zip(axes, PANELS.items(), strict=True):
        for prob, rows in results.items():
            clean = next(r for r in rows if r["perturbation"] == "clean")
            chosen = [clean, *(r for r in rows if r["perturbation"] == name)]
            ticks = ["clean", *(f"{r['severity']:g}" for r in chosen[1:])]
            ax.plot(
                range(len(chosen)), [r["auroc"] for r in chosen], marker="o", label=f"blur_jpeg_prob={prob:g}"
            )
            ax.set_xticks(range(len(chosen)), ticks)
        ax.set(xlabel=label, ylabel="test AUROC", ylim=(0.4, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Quickstart ViT on the synthetic set, trained with and without blur + JPEG", fontsize=10)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE)


def table(results: dict[float, list[dict]]) -> Table:
    out = Table(title="Test AUROC under degradation")
    out.add_column("perturbation")
    out.add_column("severity", justify="right")
    for prob in results:
        out.add_column(f"blur_jpeg_prob={prob:g}", justify="right")
    first = next(iter(results.values()))
    for i, row in enumerate(first):
        if row["perturbation"] in ("clean", *PANELS):
            severity = "" if row["severity"] is None else f"{row['severity']:g}"
            out.add_row(
                row["perturbation"], severity, *(f"{rows[i]['auroc']:.4f}" for rows in results.values())
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("outputs/blur_jpeg_curves"), help="runs and data")
    parser.add_argument("--probs", type=float, nargs="+", default=[0.0, 0.5])
    args, extra = parser.parse_known_args()
    work = args.work.resolve()
    results = {prob: train_and_score(prob, work, extra) for prob in args.probs}
    (work / "blur_jpeg_curves.json").write_text(
        json.dumps({f"{p:g}": r for p, r in results.items()}, indent=2)
    )
    draw(results)
    Console().print(table(results))
    print(f"Figure: {FIGURE}")


if __name__ == "__main__":
    main()
