"""Find every face in a photo and align it as FFHQ's crops are, keeping the transform.

The Kaggle set's faces are FFHQ crops: NVIDIA aligned each photo from its landmarks with one similarity
transform (rotation, scale, shift) chosen from the eyes and the mouth. The same recipe here, from
MediaPipe's 478 landmarks instead of dlib's 68:

- ``eye_to_eye`` joins the eye centres (image left to image right), ``eye_to_mouth`` joins their midpoint
  to the mouth corners' midpoint;
- the crop's x axis is ``eye_to_eye`` bent by the perpendicular of ``eye_to_mouth`` (so a tilted face comes
  out upright), its half side ``max(2.0 |eye_to_eye|, 1.8 |eye_to_mouth|)``, its y axis x turned 90°;
- its centre sits a tenth of ``eye_to_mouth`` below the eyes' midpoint.

The square with that centre and those axes is mapped onto the S x S crop. Outside the photo the crop
reflects it, as FFHQ pads; a face shrunk to fit is first reduced with area averaging, not aliased. The
matrix is kept, so boxes and heatmaps map back onto the original photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ffd.segmentation.landmarks import GROUPS, FaceLandmarker

# MediaPipe's "left"/"right" are the person's: their right eye is on the image's left in an unmirrored photo.
IMAGE_LEFT_EYE, IMAGE_RIGHT_EYE = GROUPS["right_eye"], GROUPS["left_eye"]
MOUTH_CORNERS = (61, 291)  # the lips' outer corners, image left then image right
NO_FACE = "no face found"
# The face.* settings (conf/face/) that FaceFinder takes, for ffd.predict and ffd.align.
FINDER_OPTIONS = ("max_faces", "min_eye_distance", "min_confidence", "max_side")


def eyes_and_mouth(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two eye centres (image left, image right) and the mouth corners' midpoint, in pixels."""
    left = points[list(IMAGE_LEFT_EYE)].mean(axis=0)
    right = points[list(IMAGE_RIGHT_EYE)].mean(axis=0)
    return left, right, points[list(MOUTH_CORNERS)].mean(axis=0)


def alignment_matrix(landmarks_px: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) similarity taking original pixel coordinates (x, y, 1) to the S x S aligned crop's."""
    eye_left, eye_right, mouth = eyes_and_mouth(np.asarray(landmarks_px, dtype=np.float64)[:, :2])
    eye_mid = (eye_left + eye_right) / 2
    eye_to_eye, eye_to_mouth = eye_right - eye_left, mouth - eye_mid
    x_axis = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # eye_to_mouth turned by -90°
    x_axis /= np.hypot(*x_axis)
    half_side = max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    centre = eye_mid + 0.1 * eye_to_mouth
    scale = size / (2 * half_side)
    cos, sin = x_axis * scale
    rotation = np.array([[cos, sin], [-sin, cos]])  # turns x_axis onto +x and scales
    return np.hstack([rotation, (size / 2 - rotation @ centre)[:, None]])


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine matrix."""
    return np.asarray(points, dtype=np.float64)[:, :2] @ matrix[:, :2].T + matrix[:, 2]


def _on_pixel_indices(matrix: np.ndarray) -> np.ndarray:
    """The matrix for OpenCV, whose pixel (i, j) is the point (i, j), not the centre (i + 0.5, j + 0.5)."""
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2].sum(axis=1) * 0.5 - 0.5
    return shifted


def warp(image: torch.Tensor, matrix: np.ndarray, size: int) -> torch.Tensor:
    """The aligned S x S uint8 crop of an RGB uint8 photo (3, H, W) under ``matrix``.

    Only the part of the photo under the crop is read; when the face must shrink, that part is reduced
    with area averaging first (a plain warp would alias the very traces a detector looks for), then the
    remaining rotation is bilinear. Outside the photo: its reflection.
    """
    height, width = image.shape[-2:]
    corners = apply(invert(matrix), np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies off the photo: reflect the whole of it
        x0, y0, x1, y1 = 0, 0, width, height
    region = np.ascontiguousarray(image[:, y0:y1, x0:x1].permute(1, 2, 0).numpy())
    to_region = matrix.copy()
    to_region[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)  # region pixels -> crop
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if scale < 1.0:
        shape = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        factors = np.array([shape[0] / (x1 - x0), shape[1] / (y1 - y0)])
        region = cv2.resize(region, shape, interpolation=cv2.INTER_AREA)
        to_region[:, :2] /= factors  # reduced region pixels -> crop
    crop = cv2.warpAffine(
        region, _on_pixel_indices(to_region), (size, size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )  # fmt: skip
    return torch.from_numpy(crop).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class AlignedFace:
    """One face, aligned: the crop the detector sees and the transform that made it."""

    image: torch.Tensor  # (3, S, S) uint8
    matrix: np.ndarray  # (2, 3) similarity: original (x, y, 1) -> crop pixels
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 around the landmarks, original pixels
    landmarks: np.ndarray  # (478, 2) landmark pixels in the crop
    index: int  # the face's place in the photo, largest first

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) crop pixels -> original photo pixels."""
        return apply(invert(self.matrix), points)

    def heatmap_to_original(self, heatmap: np.ndarray, width: int, height: int) -> np.ndarray:
        """A (S, S) map over the crop laid onto the (height, width) photo; 0 outside the crop."""
        return cv2.warpAffine(
            np.asarray(heatmap, dtype=np.float32), _on_pixel_indices(self.matrix), (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
        )  # fmt: skip


@dataclass
class FaceSearch:
    """What a photo gave: its aligned faces, notes on those left out, and why none is judged (or None)."""

    faces: list[AlignedFace] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reason: str | None = None


def eye_distance(landmarks_px: np.ndarray) -> float:
    left, right, _ = eyes_and_mouth(landmarks_px)
    return float(np.hypot(*(right - left)))


class FaceFinder:
    """MediaPipe's landmarker and the alignment, for whole photos; a context manager (closes the graph).

    Args:
        model_path: face_landmarker.task.
        size: the crop's side, the detector's input size.
        max_faces: the most faces judged per photo (the largest); a photo with more gets a note.
        min_eye_distance: pixels between the eye centres in the photo below which a face is refused (too
            little detail left to judge; MediaPipe itself misses faces under about a tenth of the photo).
        min_confidence: MediaPipe's detection and presence confidence.
        max_side: faces are searched on a copy at most this large; crops come from the full photo.
    """

    def __init__(
        self,
        model_path: str | Path,
        size: int,
        max_faces: int = 4,
        min_eye_distance: float = 16.0,
        min_confidence: float = 0.5,
        max_side: int = 2048,
    ) -> None:
        self.size, self.max_faces = size, max_faces
        self.min_eye_distance, self.max_side = float(min_eye_distance), max_side
        # one more than judged, so that a photo with more faces can say so
        self.landmarker = FaceLandmarker(model_path, num_faces=max_faces + 1, min_confidence=min_confidence)

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.landmarker.close()

    def find(self, image: torch.Tensor) -> FaceSearch:
        """The aligned faces of an RGB uint8 photo (3, H, W), largest first."""
        height, width = image.shape[-2:]
        scaled = image
        if max(height, width) > self.max_side:
            factor = self.max_side / max(height, width)
            shape = [max(1, round(height * factor)), max(1, round(width * factor))]
            scaled = torch.nn.functional.interpolate(
                image[None].float(), size=shape, mode="area"
            )[0].round().to(torch.uint8)  # fmt: skip
        # normalised landmarks: the same fractions of the full-size photo
        found = [face.pixels(width, height) for face in self.landmarker.detect(scaled)]
        found.sort(key=eye_distance, reverse=True)
        search = FaceSearch()
        if len(found) > self.max_faces:
            search.notes.append(f"more than face.max_faces={self.max_faces} faces: the largest were judged")
            found = found[: self.max_faces]
        for points in found:
            distance = eye_distance(points)
            if distance < self.min_eye_distance:
                search.notes.append(
                    f"a face with {distance:.0f} px between the eyes left out, below face.min_eye_distance="
                    f"{self.min_eye_distance:g}"
                )
                continue
            matrix = alignment_matrix(points, self.size)
            box = (*points.min(axis=0).tolist(), *points.max(axis=0).tolist())
            crop = warp(image, matrix, self.size)
            search.faces.append(AlignedFace(crop, matrix, box, apply(matrix, points), len(search.faces)))
        if not search.faces:
            search.reason = "; ".join(search.notes) if found else NO_FACE
        return search


def similarity_parts(matrix: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(scale, rotation in degrees, shift) of a (2, 3) similarity matrix."""
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    return scale, math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])), matrix[:, 2]


def is_aligned_crop(image: torch.Tensor, search: FaceSearch, size: int, tolerance: float = 0.1) -> bool:
    """Whether a photo already is an aligned face crop, to be judged whole as evaluation does.

    True for a square photo with exactly one face whose alignment, computed at the photo's own side, is
    near the identity: scale within ±``tolerance`` (10 %), rotation under 5°, shift under half of
    ``tolerance`` (5 %) of the side. ``size`` (the model's) does not enter: a 1024 px FFHQ crop qualifies
    as a 256 px one does.
    """
    height, width = image.shape[-2:]
    if height != width or len(search.faces) != 1:
        return False
    face = search.faces[0]
    at_own_side = alignment_matrix(face.to_original(face.landmarks), width)
    scale, degrees, shift = similarity_parts(at_own_side)
    return (
        abs(scale - 1.0) <= tolerance
        and abs(degrees) < 5.0
        and float(np.abs(shift).max()) < tolerance / 2 * width
    )
