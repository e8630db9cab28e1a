"""What the service answers for uploaded photos, computed as ffd.predict computes it.

The same decoder (``ffd.images.decode_rgb``, with its checks for damaged files and pixel bombs), the same
items per photo (``ffd.faces.judge.photo_items``: aligned faces, or the whole image), the same decision
(``ffd.trust.decision.decision_for``: the model's stored threshold and temperature) and the same verdict
words (``ffd.report.verdict``), so that a photo gets the verdict here that ``python -m ffd.predict`` gives
it. Photos are decoded and their faces found on one thread, the model runs on another (``batching``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import encode_png

from ffd.assets import sha256_of
from ffd.errors import UnreadableImageError
from ffd.faces.align import FaceFinder, invert
from ffd.faces.attribution import region_shares
from ffd.faces.explain import GradCam
from ffd.faces.judge import Item, photo_items
from ffd.faces.overlay import overlay
from ffd.images import FORMATS, decode_rgb
from ffd.inference import Detector, open_detector
from ffd.report import verdict
from ffd.serve.batching import Batcher
from ffd.serve.uploads import ServeError, Upload, save_uploads
from ffd.trust.decision import Decision, decision_for


@dataclass(frozen=True)
class Limits:
    """What one request may hold (conf/serve.yaml has the defaults and says what each one does);
    ``save_uploads``: the folder uploads are kept in (None: nowhere)."""

    max_upload_mb: float
    max_pixels: int
    max_images: int
    timeout_s: float
    save_uploads: Path | None = None


@dataclass
class Photo:
    name: str
    width: int
    height: int
    items: list[Item]
    no_face: str | None  # why nothing in it was judged (face.fallback=skip), else None


def claimed_pixels(name: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header claims it, read without decoding; None when Pillow cannot say
    (the decoder then says why the file is no image)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                return opened.size
    except Image.DecompressionBombError as error:  # over twice Pillow's limit: its message has the size
        raise ServeError(413, f"{name}: {error} Downscale it before sending it.") from error
    except Exception:  # not an image Pillow knows, or a header it cannot read
        return None


def decode_upload(upload: Upload, max_pixels: int) -> torch.Tensor:
    """The upload as RGB uint8 (3, H, W); 413 over ``max_pixels``, 422 for a file that is no image."""
    size = claimed_pixels(upload.name, upload.data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ServeError(
            413,
            f"{upload.name}: {size[0]} x {size[1]} = {size[0] * size[1]:,} pixels, over max_pixels="
            f"{max_pixels:,}: downscale it, or start the service with a larger max_pixels.",
        )
    empty = torch.empty(0, dtype=torch.uint8)  # torch.frombuffer refuses an empty buffer
    data = torch.frombuffer(bytearray(upload.data), dtype=torch.uint8) if upload.data else empty
    try:
        return decode_rgb(data, upload.name)
    except UnreadableImageError as error:
        status = 413 if error.reason.startswith("too many pixels") else 422
        raise ServeError(
            status, f"{upload.name}: {error.reason}. The service reads {FORMATS} images."
        ) from error


def png_base64(image: torch.Tensor) -> str:
    return base64.b64encode(encode_png(image, compression_level=3).numpy().tobytes()).decode("ascii")


def to_photo(item: Item, width: int, height: int, size: int) -> list[list[float]]:
    """The 2 x 3 matrix from the model's input pixels to the photo's: the page lays a heatmap with it."""
    if item.aligned is not None:
        return np.round(invert(item.aligned.matrix), 4).tolist()
    scale = min(width, height) / size  # eval_transform: short side to size, centre crop
    return [[scale, 0.0, (width - scale * size) / 2], [0.0, scale, (height - scale * size) / 2]]


class Service:
    """The loaded model, its decision, the face finder and the limits: ``answer`` judges a request."""

    def __init__(
        self,
        detector: Detector,
        decision: Decision,
        about: dict[str, Any],
        face: str,
        fallback: str,
        finder: FaceFinder | None,
        limits: Limits,
        batcher: Batcher,
        resources: ExitStack | None = None,
    ) -> None:
        """Held open until ``close`` (or the end of a ``with`` block): the face finder's graph and the
        decoding thread; the batcher's thread lives from the app's start to its stop."""
        self.detector, self.decision, self.about = detector, decision, about
        self.face, self.fallback, self.finder, self.limits = face, fallback, finder, limits
        self.batcher = batcher
        self.resources = resources or ExitStack()  # closed with the service: the face finder
        self.prepare = ThreadPoolExecutor(1, thread_name_prefix="ffd-faces")  # MediaPipe: one thread

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.prepare.shutdown(wait=True)
        self.resources.close()

    def info(self) -> dict[str, Any]:
        """GET /v1/model: the model, its card and decision, the face mode, the limits, the queue's counts."""
        limits = asdict(self.limits) | {"save_uploads": self.limits.save_uploads is not None}  # no path shown
        return {
            "model": self.about,
            "card": self.detector.notes.get("card", {}),
            "decision": asdict(self.decision),
            "face": {"mode": self.face, "fallback": self.fallback},
            "explain": self.detector.classifier is not None,
            "limits": limits,
            "batching": {"batch_size": self.batcher.batch_size, "max_wait_ms": 1000 * self.batcher.max_wait}
            | self.batcher.stats.summary(),
        }

    def photo(self, upload: Upload) -> Photo:
        image = decode_upload(upload, self.limits.max_pixels)
        search = self.finder.find(image) if self.finder is not None else None
        size = self.detector.image_size
        items, reason = photo_items(upload.name, image, search, size, self.face, self.fallback)
        return Photo(upload.name, int(image.shape[-1]), int(image.shape[-2]), items, reason)

    def photos(self, uploads: list[Upload]) -> list[Photo]:
        """Every upload decoded and its faces found; one 4xx naming every file that cannot be judged."""
        if self.limits.save_uploads is not None:
            save_uploads(self.limits.save_uploads, uploads)
        photos, refused = [], []
        for upload in uploads:
            try:
                photos.append(self.photo(upload))
            except ServeError as error:
                refused.append(error)
        if len(refused) == 1:
            raise refused[0]
        if refused:
            reasons = " ".join(str(error) for error in refused)
            raise ServeError(
                refused[0].status, f"{len(refused)} of {len(uploads)} photos cannot be judged: {reasons}"
            )
        return photos

    def explain_problem(self) -> ServeError | None:
        """Why POST /v1/explain cannot run with this model or install, or None."""
        if self.detector.classifier is None:
            return ServeError(
                400,
                f"POST /v1/explain needs the model's .ckpt: {self.about['name']} runs from an exported ONNX "
                "file, which gives no gradients for Grad-CAM. Start the service with model=<the .ckpt it was "
                "exported from>, or call POST /v1/predict.",
            )
        return None

    def heatmaps(self, batch: torch.Tensor, fake: list[bool]) -> np.ndarray:
        """Grad-CAM per image, hooks on the model only for this call (on the model's thread)."""
        assert self.detector.classifier is not None
        with GradCam(self.detector.classifier) as cam:
            return cam.heatmaps(batch, fake=fake)

    async def answer(self, uploads: list[Upload], explain: bool = False) -> dict[str, Any]:
        """The JSON answer: per photo, per judged face (or the whole image), P(fake) and the verdict."""
        if explain and (problem := self.explain_problem()):
            raise problem
        photos = await asyncio.get_running_loop().run_in_executor(self.prepare, self.photos, uploads)
        items = [item for photo in photos for item in photo.items]
        probs = np.zeros(0)
        heatmaps = None
        if items:
            batch = torch.stack([item.image for item in items])
            probs = self.decision.calibrate(await self.batcher(batch))
            if explain:
                fake = list(probs > self.decision.threshold)
                heatmaps = await self.batcher.on_model_thread(self.heatmaps, batch, fake)
        answers, k = [], 0
        for photo in photos:
            rows = []
            for item in photo.items:
                said, confidence = verdict(float(probs[k]), self.decision.threshold)
                row = {
                    "face": item.face,
                    "box": item.box,
                    "p_fake": float(probs[k]),
                    "verdict": said,
                    "confidence": confidence,
                    "notes": "; ".join(item.notes),
                }
                if heatmaps is not None:
                    row["heatmap_png"] = png_base64(overlay(item.image, heatmaps[k]))
                    row["to_photo"] = to_photo(item, photo.width, photo.height, self.detector.image_size)
                    row["regions"] = (
                        region_shares(heatmaps[k], item.aligned.landmarks) if item.aligned else None
                    )
                rows.append(row)
                k += 1
            answers.append(
                {"name": photo.name, "width": photo.width, "height": photo.height, "predictions": rows}
                | {"no_face": photo.no_face}
            )
        return {"model": self.about, "threshold": self.decision.threshold, "images": answers}


def open_service(
    model: str | Path,
    *,
    threshold: float | None = None,
    device: str = "auto",
    face: str = "none",
    fallback: str = "skip",
    finder: Callable[[int], FaceFinder] | None = None,
    limits: Limits,
    batch_size: int = 32,
    max_wait_ms: float = 5.0,
) -> Service:
    """Load the model once (``ffd.inference.open_detector``, a .ckpt or an .onnx) and its decision; hash
    its file for the answers. ``finder(size)`` opens the FaceFinder at the model's size (``face`` other
    than none), as for ffd.predict."""
    detector = open_detector(model, device)
    decision = decision_for(detector.notes, threshold)
    file = detector.about["file"]
    about = detector.about | {"file": Path(file).name, "sha256": sha256_of(file)}  # no server path shown
    resources = ExitStack()
    search = None
    if finder is not None and face != "none":
        search = resources.enter_context(finder(detector.image_size))
    batcher = Batcher(detector.run, batch_size, max_wait_ms)
    return Service(detector, decision, about, face, fallback, search, limits, batcher, resources)
