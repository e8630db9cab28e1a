"""What ffd.predict feeds the model for one photo: its aligned faces, or the whole image.

``face=align`` judges each face found, aligned as the training crops were (``ffd.faces.align``);
``face=none`` judges the whole image, resized as evaluation does; ``face=auto`` aligns unless the photo
already is an aligned face crop (``is_aligned_crop``), or, with no face found, is a square image of the
model's size (an evaluation image: judged as evaluation would). A photo with no face is listed with its
reason, and judged whole only with ``face.fallback=whole``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ImageDraw, ImageFont
from torch.utils.data import Dataset
from torchvision.io import write_png

from ffd.data.transforms import eval_transform
from ffd.errors import UnreadableImageError
from ffd.faces.align import AlignedFace, FaceSearch, is_aligned_crop
from ffd.faces.overlay import overlay
from ffd.images import read_rgb
from ffd.segmentation import draw

FACE_MODES = ("align", "none", "auto")
FALLBACKS = ("skip", "whole")
SHRINK_NOTE_ABOVE = 2.0  # a photo shrunk more than this to reach the model's size gets a note
ALREADY_A_CROP = "already a face crop: judged whole, as evaluation does"
VERDICT_COLOURS = {"real": (40, 170, 70), "fake": (220, 40, 40)}


@dataclass
class Item:
    """One image for the model: a face crop or a whole photo, and what the rows say about it."""

    path: str
    image: torch.Tensor  # (3, S, S) uint8
    face: int | None = None  # the face's index in the photo; None for a whole image
    box: list[float] | None = None  # x0, y0, x1, y1 in the original photo
    aligned: AlignedFace | None = None
    notes: list[str] = field(default_factory=list)


def shrink_note(factor: float, size: int) -> str | None:
    """A note when the model saw the photo (or face) shrunk by more than 2x: shrinking erases the traces
    that detectors rely on, so such a verdict rests on less."""
    if factor <= SHRINK_NOTE_ABOVE:
        return None
    return f"shrunk {factor:.1f}x to the model's {size} px (shrinking erases the traces detectors rely on)"


def whole_item(path: str, image: torch.Tensor, size: int, notes: list[str] | None = None) -> Item:
    """The whole photo as evaluation feeds it: short side to ``size``, centre crop."""
    height, width = image.shape[-2:]
    notes = list(notes or [])
    if note := shrink_note(min(height, width) / size, size):
        notes.append(note)
    return Item(path, eval_transform(size)(image), notes=notes)


def face_scale(face: AlignedFace) -> float:
    """Original pixels per crop pixel: how much the face was shrunk to reach the crop."""
    return 1.0 / float(np.hypot(face.matrix[0, 0], face.matrix[1, 0]))


def face_items(path: str, search: FaceSearch, size: int) -> list[Item]:
    """One item per aligned face, with the search's notes on the first."""
    items = []
    for face in search.faces:
        notes = [note] if (note := shrink_note(face_scale(face), size)) else []
        items.append(Item(path, face.image, face.index, [round(float(v), 2) for v in face.box], face, notes))
    if items:
        items[0].notes[:0] = search.notes
    return items


def photo_items(
    path: str, image: torch.Tensor, search: FaceSearch | None, size: int, mode: str, fallback: str
) -> tuple[list[Item], str | None]:
    """The items for one photo and, when none is judged, the reason (for the no-face list)."""
    if mode == "none" or search is None:
        return [whole_item(path, image, size)], None
    height, width = image.shape[-2:]
    if mode == "auto" and (
        is_aligned_crop(image, search, size) or (not search.faces and height == width == size)
    ):
        return [whole_item(path, image, size, [ALREADY_A_CROP])], None
    if search.faces:
        return face_items(path, search, size), None
    reason = search.reason or "no face found"
    if fallback == "whole":
        return [whole_item(path, image, size, [f"{reason}: judged whole (face.fallback=whole)"])], None
    return [], reason


def annotate(photo: torch.Tensor, judged: list[tuple[Item, str, float]]) -> torch.Tensor:
    """The photo with a box per judged face, coloured by verdict and labelled with its confidence."""
    unit = max(1, round(min(photo.shape[-2:]) / 256))
    canvas = draw.to_pil(photo)
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12 * unit)
    for item, said, confidence in judged:
        if item.box is None:
            continue
        colour = VERDICT_COLOURS[said]
        x0, y0, x1, y1 = item.box
        pen.rectangle((x0, y0, x1, y1), outline=colour, width=2 * unit)
        label = f"{item.face}: {said.capitalize()} {confidence:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), label, font=font)
        shift = bottom - top + 4 * unit
        pen.rectangle((left, top - shift, right + 4 * unit, bottom - shift + 2 * unit), fill=colour)
        pen.text((x0 + 2 * unit, y0 - shift), label, fill=(255, 255, 255), font=font)
    return draw.from_pil(canvas)


class Photos(Dataset):
    """Photos decoded in the loader's workers: the whole-image item already made for ``face=none``, the
    decoded photo otherwise (faces are found in the main process); an unreadable file gives its reason."""

    def __init__(self, paths: list[str], size: int, whole: bool) -> None:
        self.paths, self.size, self.whole = paths, size, whole

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            image = read_rgb(path)
        except UnreadableImageError as error:
            return {"path": path, "bad": error.reason}
        if self.whole:
            return {"path": path, "items": [whole_item(path, image, self.size)]}
        return {"path": path, "image": image}


def photo_outputs(
    folder: Path,
    name: Path,
    photo: torch.Tensor,
    judged: list[tuple[Item, str, float]],
    heatmaps: list[np.ndarray] | None,
) -> None:
    """``annotated/<name>.png`` (boxes by verdict) and, with heatmaps, ``heatmaps/<name>_f<k>.png`` per
    face (the crop the model saw) and ``heatmaps/<name>.png`` (every face's heatmap on the photo)."""
    height, width = photo.shape[-2:]
    annotated = annotate(photo, judged)
    if judged and judged[0][0].box is None:  # the whole photo was judged: the verdict as a note
        item, said, confidence = judged[0]
        annotated = draw.add_note(annotated, f"whole image: {said.capitalize()} {confidence:.2f}")
    target = folder / "annotated" / name.with_name(name.name + ".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_png(annotated, str(target), compression_level=3)
    if heatmaps is None:
        return
    combined, covered = np.zeros((2, height, width), np.float32)
    target = folder / "heatmaps" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    for (item, _, _), heatmap in zip(judged, heatmaps, strict=True):
        suffix = "" if item.face is None else f"_f{item.face}"
        write_png(overlay(item.image, heatmap), str(target.with_name(f"{target.name}{suffix}.png")))
        if item.aligned is not None:
            combined = np.maximum(combined, item.aligned.heatmap_to_original(heatmap, width, height))
            covered = np.maximum(
                covered, item.aligned.heatmap_to_original(np.ones_like(heatmap), width, height)
            )
    if covered.any():  # the faces' heatmaps on the photo; the rest of it as it is
        inside = torch.from_numpy(covered > 0.5)
        write_png(
            torch.where(inside, overlay(photo, combined), photo), str(target.with_name(target.name + ".png"))
        )
