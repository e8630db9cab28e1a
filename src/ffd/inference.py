"""Real/Fake verdicts for image files, from a checkpoint (PyTorch) or an exported ONNX file (onnxruntime).

What ``python -m ffd.predict`` runs: resolve the input (an image, a folder, a glob or a list of paths),
decode and resize exactly as evaluation does (FaceImages, eval_transform), predict in batches, then print
a bounded table, write predictions.csv, predictions.json and bad_files.txt, and record the run for the log
file. Unreadable files are listed and skipped, never fatal.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from rich.text import Text
from torch.utils.data import DataLoader

from ffd import LABELS, record
from ffd.data.datamodule import FaceImages, collate_faces, default_num_workers
from ffd.data.transforms import eval_transform
from ffd.deploy.session import OnnxDetector
from ffd.images import FORMATS, LIST_SUFFIX, find_images
from ffd.models.classifier import load_classifier
from ffd.report import FILE_NAMES, verdict, write_bad_files
from ffd.runtime import (
    UserError,
    count_problem,
    device_problem,
    flag_problem,
    folder_instead_of_file,
    make_output_dir,
    output_folder,
    refuse_earlier_outputs,
    threshold_problem,
    workers_problem,
)

MODEL_SUFFIXES = (".ckpt", ".onnx")
OUTPUT_FILES = ("predictions.csv", "predictions.json", "bad_files.txt")
# The test report's columns less the label, in its order, so that the two files line up.
PREDICTION_COLUMNS = ("path", "p_fake", "verdict", "confidence")


class PredictError(UserError):
    """Bad input for ffd.predict: a path that does not exist, no images, an unusable model file."""


@dataclass(frozen=True)
class Detector:
    """A checkpoint or an ONNX file behind one interface: uint8 RGB (N, 3, S, S) -> P(fake) (N,)."""

    run: Callable[[torch.Tensor], np.ndarray]
    image_size: int
    about: dict[str, Any]


def open_detector(model: str | Path, device: str = "auto") -> Detector:
    """Load a .ckpt with PyTorch (on ``device``; auto = cuda if present) or an .onnx with onnxruntime."""
    path = Path(model).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        raise PredictError(folder_instead_of_file(path, "model", MODEL_SUFFIXES))
    if suffix not in MODEL_SUFFIXES:
        raise PredictError(
            f"model={model}: not a model file ffd.predict reads. Pass a .ckpt written by ffd.train "
            "(outputs/train/<timestamp>/checkpoints/) or an .onnx written by ffd.export."
        )
    if not path.is_file():
        raise PredictError(
            f"model={model} does not exist. Pass a .ckpt written by ffd.train "
            "(outputs/train/<timestamp>/checkpoints/) or an .onnx written by ffd.export."
        )
    file = os.path.abspath(path)  # predictions.json is read from the run folder, not the shell's
    if suffix == ".onnx":
        try:
            session = OnnxDetector(path)
        except ModuleNotFoundError as error:
            raise PredictError(
                f"model={model} needs onnxruntime ({error}): pip install 'ffd[export]', or pass the .ckpt."
            ) from error
        info = session.info
        about = {"name": info.model, "precision": info.precision, "checkpoint_sha256": info.checkpoint_sha256}
        about |= {"runtime": "onnxruntime", "providers": session.session.get_providers()}
        return Detector(session, session.image_size, {"file": file, **about})
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    classifier = load_classifier(path).eval().to(device)

    @torch.inference_mode()
    def run(images: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(classifier(images.to(device, non_blocking=True))).float().cpu().numpy()

    about = {"file": file, "name": classifier.net_name, "runtime": "pytorch", "device": device}
    return Detector(run, int(classifier.image_size), about)


def shown(path: str) -> str:
    """``path`` relative to the current folder when it lies below it, else as it is.

    For the console only: it is read in the shell the command ran from, where the short path resolves
    (as the input typed there did); the files, read from the run folder, keep absolute paths."""
    relative = os.path.relpath(path)
    return path if relative == os.pardir or relative.startswith(os.pardir + os.sep) else relative


@dataclass
class Prediction:
    path: str  # absolute, symbolic links kept
    p_fake: float
    verdict: str  # "real" or "fake"
    confidence: float  # the probability of the verdict's class


@dataclass
class PredictRun:
    """What a run produced; ``write`` and ``print`` present it."""

    model: dict[str, Any]
    input: str
    threshold: float
    rows: list[Prediction] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    complete: bool = False  # False in the files of a run that stopped early (an interrupt, an error)

    def counts(self) -> dict[str, int]:
        verdicts = [row.verdict for row in self.rows]
        return {
            "images": len(self.rows),
            **{name: verdicts.count(name) for name in LABELS.values()},
            "unreadable": len(self.bad),
        }

    def write(self, output: Path) -> None:
        output.mkdir(parents=True, exist_ok=True)
        with (output / "predictions.csv").open("w", newline="", errors=FILE_NAMES) as handle:
            writer = csv.writer(handle)
            writer.writerow(PREDICTION_COLUMNS)
            for row in self.rows:
                # repr: every digit, so that a P(fake) just under the threshold never reads as equal to it
                writer.writerow([row.path, repr(row.p_fake), row.verdict, repr(row.confidence)])
        summary = {
            "input": self.input,
            "model": self.model,
            "threshold": self.threshold,
            "complete": self.complete,
            "labels": {str(key): name for key, name in LABELS.items()} | {"probability": "P(fake)"},
            "counts": self.counts(),
            "predictions": [vars(row) for row in self.rows],
            "unreadable": [{"path": path, "reason": reason} for path, reason in self.bad],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (output / "predictions.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_bad_files(output / "bad_files.txt", self.bad)

    def print(self, console: Console, max_rows: int, output: Path | None = None) -> None:
        # an ONNX file names its precision (fp32, fp16, int8); a checkpoint has none
        how = ", ".join(filter(None, (self.model["runtime"], self.model.get("precision"))))
        table = Table(title=f"ffd.predict: {self.model['name']} ({how})")
        table.add_column("file", overflow="fold")
        table.add_column("verdict")
        table.add_column("confidence", justify="right")
        table.add_column("P(fake)", justify="right")
        for row in self.rows[:max_rows]:
            style = "red" if row.verdict == LABELS[1] else "green"
            said = f"[{style}]{row.verdict.capitalize()}[/]"
            # Text: a [x] in a file name is shown, not read as markup
            table.add_row(Text(shown(row.path)), said, f"{row.confidence:.4f}", f"{row.p_fake:.4f}")
        if len(self.rows) > max_rows:
            table.caption = f"first {max_rows} of {len(self.rows)} rows; predictions.csv has them all"
        if self.rows:
            console.print(table)
        if self.bad:
            listing = Table(title="Unreadable files (skipped)")
            listing.add_column("file", overflow="fold")
            listing.add_column("reason", overflow="fold")
            for path, reason in self.bad[:max_rows]:
                listing.add_row(Text(shown(path)), Text(reason))
            if len(self.bad) > max_rows:
                listing.caption = f"first {max_rows} of {len(self.bad)}; bad_files.txt has them all"
            console.print(listing)
        counts = self.counts()
        console.print(
            f"{counts['images']} image(s): {counts['real']} real, {counts['fake']} fake "
            f"(threshold {self.threshold:g}); {counts['unreadable']} unreadable file(s) skipped."
            + (f" Written to {output}: {', '.join(OUTPUT_FILES)}." if output else "")
        )

    def log(self, output: Path) -> None:
        """What was done, for the run's log file (predict.log), which the console's table does not reach."""
        counts = self.counts()
        record.info(
            "ffd.predict%s: input %s; model %s; threshold %g; %d image(s): %d real, %d fake; %d unreadable "
            "file(s) skipped; written to %s: %s",
            "" if self.complete else " (stopped early)",
            self.input,
            json.dumps(self.model),
            self.threshold,
            *(counts[key] for key in ("images", "real", "fake", "unreadable")),
            output,
            ", ".join(OUTPUT_FILES),
        )


def check_options(
    threshold: Any, batch_size: Any, num_workers: Any, device: str, overwrite: Any = False
) -> None:
    """Refuse an option out of range before any file is read, naming the option."""
    problems = []
    if problem := flag_problem(overwrite, "overwrite"):
        problems.append(problem)
    if problem := threshold_problem(threshold, "threshold"):
        problems.append(problem)
    if problem := count_problem(batch_size, "batch_size"):
        problems.append(problem)
    if problem := workers_problem(num_workers, "num_workers"):
        problems.append(problem)
    if problem := device_problem(str(device)):
        problems.append(problem)
    if problems:
        raise PredictError(
            f"{'; '.join(problems)}. Fix the option on the command line or in conf/predict.yaml."
        )


def predict(
    inputs: str | Path,
    model: str | Path,
    output: str | Path,
    threshold: float = 0.5,
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str = "auto",
    max_rows: int = 40,
    overwrite: bool = False,
    console: Console | None = None,
) -> PredictRun:
    """The whole command: find the images, load the model, predict in batches, write and print.

    The output folder is checked before the model runs; what was predicted is written also when the run
    stops early (predictions.json says "complete": false)."""
    check_options(threshold, batch_size, num_workers, device, overwrite)
    console = console or Console()
    output = output_folder(output)
    files = find_images(inputs)
    refuse_earlier_outputs(output, list(OUTPUT_FILES), overwrite)
    detector = open_detector(model, device)
    make_output_dir(output)  # after the model loaded (nothing is written for an unusable one), before it runs
    # Absolute paths in the files, which are read from the run folder; abspath keeps symbolic links.
    dataset = FaceImages([(os.path.abspath(file), -1) for file in files], eval_transform(detector.image_size))
    workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers if len(files) > batch_size else 0,  # workers only pay off over many batches
        pin_memory=torch.cuda.is_available(),
        collate_fn=partial(collate_faces, image_size=detector.image_size),
    )
    given = os.path.abspath(os.path.expanduser(inputs))
    result = PredictRun(model=detector.about, input=given, threshold=threshold)
    single = len(files) == 1  # no progress bar for one image
    batches = track(loader, "predict", total=len(loader), console=console, transient=True, disable=single)
    try:
        for batch in batches:
            result.bad += batch["bad"]
            if not batch["path"]:
                continue
            for path, prob in zip(batch["path"], detector.run(batch["image"]), strict=True):
                said, confidence = verdict(float(prob), threshold)
                result.rows.append(Prediction(path, float(prob), said, confidence))
        result.complete = True
    finally:
        result.write(output)
        result.log(output)
    result.print(console, max_rows, output)
    if not result.rows and len(files) == 1 and result.bad:  # one file named: its reason is the error
        raise PredictError(
            f"input={inputs}: {result.bad[0][1]}. ffd.predict reads images ({FORMATS}): pass one, a folder "
            f"of them, a quoted glob or a {LIST_SUFFIX} file listing their paths."
        )
    if not result.rows:
        raise PredictError(
            f"input={inputs}: none of its {len(files)} file(s) could be read as an image (reasons above and "
            f"in {output / 'bad_files.txt'}). Replace or re-export them."
        )
    return result
