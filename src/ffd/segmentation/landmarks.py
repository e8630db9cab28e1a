"""MediaPipe Face Landmarker (Tasks API, IMAGE mode): 478 landmarks per face, and their named groups.

The groups are defined here once, from MediaPipe's own connection sets, and used by the drawing, the
regions and the JSON. "left" and "right" are the person's own, as in MediaPipe: in a photo that is not
mirrored, the left eye is on the image's right side.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mediapipe as mp
import numpy as np
import torch
from mediapipe.tasks.python import BaseOptions, vision

from ffd.assets import AssetError

log = logging.getLogger(__name__)

NUM_LANDMARKS = 478
# What MediaPipe's native code writes to stderr each time a landmarker starts, none of it for the user to
# act on: absl's INFO and WARNING lines ("W0000 00:00:1795750241.42 30385 face_landmarker_graph.cc:181]
# Sets FaceBlendshapesGraph acceleration to xnnpack by default.", "... inference_feedback_manager.cc:121]
# Feedback manager requires a model with a single signature inference. ..."), TensorFlow Lite's "INFO:
# Created TensorFlow Lite XNNPACK delegate for CPU." and absl's note that it logs to stderr before it is
# initialised. MediaPipe 1.2 reads no environment variable that turns them off (GLOG_minloglevel and
# TF_CPP_MIN_LOG_LEVEL change nothing). Error lines (E0000 ..., F0000 ...) are never dropped.
START_UP_CHATTER = re.compile(
    rb"[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] |INFO: |WARNING: (Logging before InitGoogle\(\)|"
    rb"All log messages before absl::InitializeLog\(\))"
)

_SETS = vision.FaceLandmarksConnections
GROUP_CONNECTIONS: dict[str, tuple[tuple[int, int], ...]] = {
    name: tuple((c.start, c.end) for c in connections)
    for name, connections in {
        "face_oval": _SETS.FACE_LANDMARKS_FACE_OVAL,
        "left_eyebrow": _SETS.FACE_LANDMARKS_LEFT_EYEBROW,
        "right_eyebrow": _SETS.FACE_LANDMARKS_RIGHT_EYEBROW,
        "left_eye": _SETS.FACE_LANDMARKS_LEFT_EYE,
        "right_eye": _SETS.FACE_LANDMARKS_RIGHT_EYE,
        "left_iris": _SETS.FACE_LANDMARKS_LEFT_IRIS,
        "right_iris": _SETS.FACE_LANDMARKS_RIGHT_IRIS,
        "nose": _SETS.FACE_LANDMARKS_NOSE,
        "lips": _SETS.FACE_LANDMARKS_LIPS,
    }.items()
}
GROUPS: dict[str, tuple[int, ...]] = {
    name: tuple(sorted({i for pair in pairs for i in pair})) for name, pairs in GROUP_CONNECTIONS.items()
}
MESH: tuple[tuple[int, int], ...] = tuple((c.start, c.end) for c in _SETS.FACE_LANDMARKS_TESSELATION)


@dataclass(frozen=True)
class Face:
    """One detected face. landmarks: (478, 3) float, x and y as fractions of the image width and height
    (resolution-free, so they map onto the original image whatever size the model saw), z relative depth."""

    landmarks: np.ndarray
    blendshapes: dict[str, float] | None = None

    def pixels(self, width: int, height: int) -> np.ndarray:
        """(478, 2) x, y in pixels of an image of the given size."""
        return self.landmarks[:, :2] * np.array([width, height], dtype=np.float64)

    def centre(self, group: str, width: int, height: int) -> np.ndarray:
        return self.pixels(width, height)[list(GROUPS[group])].mean(axis=0)

    def bbox(self, width: int, height: int) -> np.ndarray:
        """x0, y0, x1, y1 around all landmarks, in pixels."""
        pixels = self.pixels(width, height)
        return np.concatenate([pixels.min(axis=0), pixels.max(axis=0)])


def _flush_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


@contextmanager
def start_up_chatter_dropped() -> Iterator[None]:
    """Hold what is written to stderr (fd 2) during the block, then pass it on without the lines that
    START_UP_CHATTER matches (those are logged at DEBUG: `hydra.verbose=true` shows them). If the block
    raises, every line is passed on. Where fd 2 cannot be redirected, nothing is held."""
    _flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a closed stderr, an embedding host)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = []
            for line in held.read().splitlines(keepends=True):
                if failed or not START_UP_CHATTER.match(line):
                    kept.append(line)
                else:
                    log.debug("MediaPipe: %s", line.decode(errors="replace").rstrip())
            rest = b"".join(kept)
            while rest:
                rest = rest[os.write(2, rest) :]


def ignore_sigprof() -> None:
    """Ignore SIGPROF for the rest of the process, unless someone (a profiler) handles it.

    MediaPipe's graph arms CPU timers that raise it, and they outlive the graph: its default action ended
    ffd.eval explain=true ("Profiling timer expired") in 3 of 5 runs after the graph was closed, and a
    pytest run seconds after an ffd.align test. Only the main thread may set a handler; elsewhere nothing
    is changed."""
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGPROF) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGPROF, signal.SIG_IGN)


class FaceLandmarker:
    """MediaPipe's FaceLandmarker in IMAGE mode; a context manager, so the native graph is always closed."""

    def __init__(
        self,
        model_path: str | Path,
        num_faces: int = 1,
        blendshapes: bool = False,
        min_confidence: float = 0.5,
    ) -> None:
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            output_face_blendshapes=blendshapes,
        )
        ignore_sigprof()  # before the graph arms its timers
        try:
            with start_up_chatter_dropped():
                self._landmarker = vision.FaceLandmarker.create_from_options(options)
        # MediaPipe 1.2 raises RuntimeError for a file that is no zip ("Unable to open zip archive."),
        # FileNotFoundError for a bundle without one of the landmarker's models ("No file with name:
        # face_detector.tflite. All files in the model asset bundle are: " and every name in it, kilobytes
        # for another model's bundle) and ValueError for a model in it that is not one ("The model is not a
        # valid Flatbuffer buffer").
        except (RuntimeError, OSError, ValueError) as error:
            reason = str(error).split(". ", 1)[0].rstrip(".")[:200]  # the first sentence: never the listing
            raise AssetError(
                f"{model_path}: MediaPipe cannot load it as a Face Landmarker model ({reason}). Use the "
                "official face_landmarker.task: leave out models.face_landmarker.path and "
                "models.face_landmarker.sha256 (or set both to null) to take it from the cache, or run "
                "`python -m ffd.assets fetch` to fetch it."
            ) from None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._landmarker.close()

    def detect(self, image: torch.Tensor) -> list[Face]:
        """Faces in an RGB uint8 image (3, H, W), in MediaPipe's order."""
        pixels = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        result = self._landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
        faces = []
        for index, points in enumerate(result.face_landmarks):
            landmarks = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64)
            scores = None
            if result.face_blendshapes:
                scores = {c.category_name: float(c.score) for c in result.face_blendshapes[index]}
            faces.append(Face(landmarks, scores))
        return faces


def face_record(face: Face, width: int, height: int) -> dict:
    """JSON-ready record of one face in the original image's pixels (width x height)."""
    pixels = face.pixels(width, height)
    record = {
        "landmarks_normalised": np.round(face.landmarks, 6).tolist(),
        "landmarks_px": np.round(pixels, 2).tolist(),
        "group_centres_px": {
            name: np.round(face.centre(name, width, height), 2).tolist() for name in GROUP_CONNECTIONS
        },
        "bbox_px": np.round(face.bbox(width, height), 2).tolist(),
    }
    if face.blendshapes is not None:
        record["blendshapes"] = {name: round(score, 5) for name, score in face.blendshapes.items()}
    return record
