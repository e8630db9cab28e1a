"""Real/Fake verdicts for image files, from a checkpoint (PyTorch) or an exported ONNX file (onnxruntime).

What ``python -m ffd.predict`` runs: resolve the input (an image, a folder, a glob or a list of paths),
decode and resize exactly as evaluation does (FaceImages, eval_transform), predict in batches, then print
a bounded table, write predictions.csv, predictions.json and bad_files.txt, and record the run for the log
file. Unreadable files are listed and skipped, never fatal.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from torch.utils.data import DataLoader

from ffd.console import table_console
from ffd.data.workers import default_num_workers
from ffd.deploy.session import OnnxDetector
from ffd.errors import UserError
from ffd.faces.attribution import region_shares
from ffd.faces.judge import FACE_MODES, FALLBACKS, Item, Photos, photo_items, photo_outputs
from ffd.images import FORMATS, LIST_SUFFIX, find_images, read_rgb
from ffd.models.card import card_line, synthetic_warning
from ffd.models.checkpoint import load_classifier
from ffd.models.classifier import DeepfakeClassifier
from ffd.options import (
    count_problem,
    device_problem,
    flag_problem,
    folder_instead_of_file,
    threshold_problem,
    workers_problem,
)
from ffd.outputs import make_output_dir, output_folder, refuse_earlier_outputs
from ffd.predictions import OUTPUT_FILES, Prediction, PredictRun
from ffd.report import verdict
from ffd.segmentation.outputs import output_names
from ffd.trust.decision import Decision, decision_for

MODEL_SUFFIXES = (".ckpt", ".onnx")


class PredictError(UserError):
    """Bad input for ffd.predict: a path that does not exist, no images, an unusable model file."""


@dataclass(frozen=True)
class Detector:
    """A checkpoint or an ONNX file behind one interface: uint8 RGB (N, 3, S, S) -> P(fake) (N,)."""

    run: Callable[[torch.Tensor], np.ndarray]
    image_size: int
    about: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)  # card and decision (ffd.models.notes)
    classifier: DeepfakeClassifier | None = None  # a .ckpt's module (Grad-CAM needs it); None for .onnx


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
        notes = {"card": info.card, "decision": info.decision}
        return Detector(session, session.image_size, {"file": file, **about}, notes)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    classifier = load_classifier(path).eval().to(device)

    @torch.inference_mode()
    def run(images: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(classifier(images.to(device, non_blocking=True))).float().cpu().numpy()

    about = {"file": file, "name": classifier.net_name, "runtime": "pytorch", "device": device}
    return Detector(run, int(classifier.image_size), about, classifier.notes, classifier)


def check_options(
    threshold: Any, batch_size: Any, num_workers: Any, device: str, overwrite: Any = False
) -> None:
    """Refuse an option out of range before any file is read, naming the option."""
    problems = []
    if problem := flag_problem(overwrite, "overwrite"):
        problems.append(problem)
    if threshold is not None and (problem := threshold_problem(threshold, "threshold")):
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


def check_face_options(face: Any, fallback: Any, annotate: Any, explain: Any) -> None:
    """Refuse a face mode, fallback or switch that does not exist, naming it, before any work."""
    problems = [
        None if face in FACE_MODES else f"face={face} is not one of {', '.join(FACE_MODES)}",
        None if fallback in FALLBACKS else f"face.fallback={fallback} is not one of {', '.join(FALLBACKS)}",
        flag_problem(annotate, "annotate"),
        flag_problem(explain, "explain"),
    ]
    if any(problems):
        raise PredictError(
            f"{'; '.join(filter(None, problems))}. Fix the option on the command line or in "
            "conf/predict.yaml."
        )


def decision_line(decision: Decision) -> str:
    """The decision rule on one line: the threshold, where it came from, and the calibration."""
    temperature = decision.temperature
    calibrated = f"; P(fake) calibrated with temperature {temperature:.3g}" if temperature != 1 else ""
    return f"Decision: fake when P(fake) > {decision.threshold:.4g} ({decision.source}){calibrated}."


def extra_outputs(annotate: bool, explain: bool) -> list[str]:
    """The folders a run writes beside its files: annotated photos, heatmaps."""
    return (["annotated"] if annotate or explain else []) + (["heatmaps"] if explain else [])


def predict(
    inputs: str | Path,
    model: str | Path,
    output: str | Path,
    threshold: float | None = None,
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str = "auto",
    max_rows: int = 40,
    overwrite: bool = False,
    console: Console | None = None,
    face: str = "none",
    fallback: str = "skip",
    finder: Callable[[int], Any] | None = None,
    annotate: bool = False,
    explain: bool = False,
) -> PredictRun:
    """The whole command: find the images, load the model, predict in batches, write and print.

    ``face`` (``ffd.faces.judge``): ``none`` judges whole images, ``align`` each aligned face, ``auto``
    aligns unless a photo already is a face crop. ``finder(size)`` opens the ``FaceFinder`` (a context
    manager) for the model's size; needed unless ``face=none``. The output folder is checked before the
    model runs; what was predicted is written also when the run stops early ("complete": false)."""
    check_options(threshold, batch_size, num_workers, device, overwrite)
    check_face_options(face, fallback, annotate, explain)
    console = console or table_console()
    output = output_folder(output)
    files = find_images(inputs)
    refuse_earlier_outputs(output, list(OUTPUT_FILES) + extra_outputs(annotate, explain), overwrite)
    if explain:
        # Imported only here: grad-cam is the optional 'explain' extra (a missing one is named).
        from ffd.faces.explain import GradCam, refuse_onnx_explain

        if Path(model).suffix.lower() == ".onnx":
            raise refuse_onnx_explain(model)
    detector = open_detector(model, device)
    card = detector.notes.get("card", {})
    console.print(card_line(card))
    decision = decision_for(detector.notes, threshold)
    console.print(decision_line(decision))
    if warning := synthetic_warning(card):
        console.print(f"[yellow]Warning:[/] {warning}")
    make_output_dir(output)  # after the model loaded (nothing is written for an unusable one), before it runs
    # Absolute paths in the files, which are read from the run folder; abspath keeps symbolic links.
    paths = [os.path.abspath(file) for file in files]
    names = {os.path.abspath(file): name for file, name in output_names(files).items()}
    workers = default_num_workers() if num_workers is None else num_workers
    loader = DataLoader(
        Photos(paths, detector.image_size, whole=face == "none"),
        batch_size=None,
        num_workers=workers if len(files) > batch_size else 0,  # workers only pay off over many batches
    )
    given = os.path.abspath(os.path.expanduser(inputs))
    settings = {"face": face, "face_fallback": fallback, "model_card": card, "decision": vars(decision)}
    result = PredictRun(model=detector.about, input=given, threshold=decision.threshold, settings=settings)
    pending: list[tuple[dict[str, Any], list[Item]]] = []

    def judge_pending() -> None:
        """Judge the queued photos' images in one batch (faces of one photo never straddle two)."""
        if not pending:
            return
        batch = torch.stack([item.image for _, queued in pending for item in queued])
        probs = decision.calibrate(detector.run(batch))
        heatmaps = cam.heatmaps(batch, fake=list(probs > decision.threshold)) if cam else None
        start = 0
        for sample, queued in pending:
            judged = []
            for k, item in enumerate(queued, start=start):
                said, confidence = verdict(float(probs[k]), decision.threshold)
                shares = None
                if heatmaps is not None and item.aligned is not None:
                    shares = region_shares(heatmaps[k], item.aligned.landmarks)
                notes = "; ".join(item.notes)
                p_fake = float(probs[k])
                result.rows.append(
                    Prediction(item.path, p_fake, said, confidence, item.face, item.box, notes, shares)
                )
                judged.append((item, said, confidence))
            if annotate or explain:
                photo = sample["image"] if "image" in sample else read_rgb(sample["path"])
                maps = None if heatmaps is None else list(heatmaps[start : start + len(queued)])
                photo_outputs(output, names[sample["path"]], photo, judged, maps)
            start += len(queued)
        pending.clear()

    single = len(files) == 1  # no progress bar for one image
    photos = track(loader, "predict", total=len(paths), console=console, transient=True, disable=single)
    with ExitStack() as stack:
        search = stack.enter_context(finder(detector.image_size)) if face != "none" else None
        cam = stack.enter_context(GradCam(detector.classifier)) if explain else None
        try:
            for sample in photos:
                if "bad" in sample:
                    result.bad.append((sample["path"], sample["bad"]))
                    continue
                if "items" in sample:
                    items, reason = sample["items"], None
                else:
                    image = sample["image"]
                    items, reason = photo_items(
                        sample["path"], image, search.find(image), detector.image_size, face, fallback
                    )
                if reason:
                    result.no_face.append((sample["path"], reason))
                    continue
                pending.append((sample, items))
                if sum(len(queued) for _, queued in pending) >= batch_size:
                    judge_pending()
            judge_pending()
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
    if not result.rows and not result.no_face:
        raise PredictError(
            f"input={inputs}: none of its {len(files)} file(s) could be read as an image (reasons above and "
            f"in {output / 'bad_files.txt'}). Replace or re-export them."
        )
    return result
