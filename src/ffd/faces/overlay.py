"""A heatmap blended over an image, for the overlay PNGs and report figures.

Apart from ffd.faces.explain so that drawing needs no grad-cam: ffd.predict and ffd.faces.judge import it
whether or not the optional 'explain' extra is installed."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from torch import Tensor
from torch.nn import functional as F


def overlay(image: Tensor, heatmap: np.ndarray, alpha: float = 0.45) -> Tensor:
    """An RGB uint8 image (3, H, W) with a heatmap in [0, 1] (any size, resized to the image) blended over
    it in matplotlib's 'jet' colours: uint8 (3, H, W), for PNGs and report figures."""
    height, width = image.shape[-2:]
    heat = torch.as_tensor(heatmap, dtype=torch.float32)[None, None]
    heat = F.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    colours = colormaps["jet"](heat.clamp(0, 1).numpy())[..., :3]  # (H, W, 3) in 0..1
    coloured = torch.from_numpy(colours).permute(2, 0, 1).float() * 255.0
    blended = (1.0 - alpha) * image.float() + alpha * coloured
    return blended.round().clamp(0, 255).to(torch.uint8)
