"""Annotations on RGB uint8 tensors (3, H, W): landmark points, label overlays, legends and notes.

torchvision.utils draws the points and lines; Pillow writes the text.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_keypoints

Colour = tuple[int, int, int]
NOTE_MIN_PX = 7  # the smallest font a note is written in: smaller is not read


def palette(count: int) -> list[Colour]:
    """Distinct colours: matplotlib's tab10 for up to 10, else tab20 (repeated beyond 20)."""
    table = colormaps["tab10" if count <= 10 else "tab20"].colors
    return [tuple(int(255 * c) for c in table[i % len(table)]) for i in range(count)]


def _scale(image: torch.Tensor) -> int:
    """A size unit for marks and text that reads the same on a 256 px thumbnail and a 4K photo."""
    return max(1, round(min(image.shape[-2:]) / 256))


def draw_groups(
    image: torch.Tensor, points: list[np.ndarray], groups: dict[str, tuple[int, ...]], colours: list[Colour]
) -> torch.Tensor:
    """A small circle at each point of each group, one colour per group; points: (478, 2) per face."""
    if not points:
        return image
    stacked = torch.as_tensor(np.stack(points), dtype=torch.float32)
    radius = _scale(image)
    for indices, colour in zip(groups.values(), colours, strict=True):
        image = draw_keypoints(image, stacked[:, list(indices)], colors=colour, radius=radius, width=0)
    return image


def draw_connections(
    image: torch.Tensor, points: list[np.ndarray], connections: tuple[tuple[int, int], ...], colour: Colour
) -> torch.Tensor:
    """Thin lines between connected landmarks (the face mesh)."""
    if not points:
        return image
    stacked = torch.as_tensor(np.stack(points), dtype=torch.float32)
    return draw_keypoints(image, stacked, connectivity=list(connections), colors=colour, radius=0, width=1)


def overlay_labels(
    image: torch.Tensor, labels: torch.Tensor, colours: list[Colour], alpha: float = 0.5
) -> torch.Tensor:
    """Blend one colour per class over the image; class 0 (background) is left as it is.

    One colour lookup and one blend for all classes: the same pixels (within 1) as torchvision's
    draw_segmentation_masks, which blends class by class and took 2-5 times as long on a 512 px image.
    """
    painted = torch.tensor(colours, dtype=torch.float32)[labels.long()].permute(2, 0, 1).contiguous()
    blended = (image.float() * (1 - alpha) + painted * alpha).round().to(torch.uint8)
    return torch.where(labels.bool(), blended, image)


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def from_pil(canvas: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous()


def add_legend(image: torch.Tensor, entries: list[tuple[str, Colour]]) -> torch.Tensor:
    """A panel to the right of the image: a colour swatch and a name per entry."""
    unit = _scale(image)
    line, font = 14 * unit, ImageFont.load_default(size=11 * unit)
    width = 8 * unit + max((int(font.getlength(name)) for name, _ in entries), default=0) + 20 * unit
    height = max(image.shape[1], (len(entries) + 1) * line)
    canvas = Image.new("RGB", (image.shape[2] + width, height), (255, 255, 255))
    canvas.paste(to_pil(image), (0, 0))
    pen = ImageDraw.Draw(canvas)
    left = image.shape[2] + 4 * unit
    for row, (name, colour) in enumerate(entries):
        top = (row + 0.5) * line
        pen.rectangle((left, top, left + 10 * unit, top + 10 * unit), fill=colour)
        pen.text((left + 14 * unit, top), name, fill=(0, 0, 0), font=font)
    return from_pil(canvas)


def add_note(image: torch.Tensor, text: str) -> torch.Tensor:
    """Write a short note in the top-left corner, on a dark band so it reads on any photo. On a small image
    the font shrinks and the words go one per line until the note fits whole; an image too small for it
    at NOTE_MIN_PX is returned as it is (the JSON holds the note)."""
    height, width = image.shape[-2:]
    canvas = to_pil(image)
    pen = ImageDraw.Draw(canvas)
    for size in range(12 * _scale(image), NOTE_MIN_PX - 1, -1):
        font, pad = ImageFont.load_default(size=size), max(1, size // 6)
        for layout in (text, text.replace(" ", "\n")):
            left, top, right, bottom = pen.multiline_textbbox((2 * pad, 2 * pad), layout, font=font)
            if right + pad <= width and bottom + pad <= height:
                pen.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
                pen.multiline_text((2 * pad, 2 * pad), layout, fill=(255, 255, 255), font=font)
                return from_pil(canvas)
    return image
