"""The degradations a user's photo goes through (JPEG re-encoding, Gaussian blur, downscale-then-upscale,
Gaussian noise, centre crop), each on a decoded uint8 image at its own size and deterministic: what
ffd.trust.robustness measures a detector against, kept apart from the measuring."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF

CLEAN = "clean"


def _jpeg(image: torch.Tensor, quality: float, generator: torch.Generator) -> torch.Tensor:
    return decode_jpeg(encode_jpeg(image, quality=int(quality)), mode=ImageReadMode.RGB)


def _blur(image: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    # 3 sigma each side, capped where reflection padding would run past the image
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * ((min(image.shape[-2:]) - 1) // 2) + 1)
    return TF.gaussian_blur(image, kernel_size=[size, size], sigma=[sigma, sigma])


def _downscale(image: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    height, width = image.shape[-2:]
    small = TF.resize(image, [max(1, round(height * scale)), max(1, round(width * scale))], antialias=True)
    return TF.resize(small, [height, width], antialias=True)


def _noise(image: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(image.shape, generator=generator) * std
    return (image.float() + noise).round().clamp(0, 255).to(torch.uint8)


def _crop(image: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    height, width = image.shape[-2:]
    kept = TF.center_crop(image, [max(1, round(height * fraction)), max(1, round(width * fraction))])
    return TF.resize(kept, [height, width], antialias=True)


@dataclass(frozen=True)
class Perturbation:
    """One kind of degradation: uint8 (3, H, W) -> uint8 (3, H, W) at a severity."""

    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
    unit: str  # the severity's meaning, for the figure's axis and the errors
    allowed: Callable[[float], bool]
    allowed_text: str
    harsher_is_lower: bool  # JPEG quality, scale and crop fraction: lower is harsher


PERTURBATIONS: dict[str, Perturbation] = {
    "jpeg": Perturbation(
        _jpeg, "JPEG quality", lambda q: q == int(q) and 1 <= q <= 100, "a whole number 1..100", True
    ),
    "blur": Perturbation(_blur, "Gaussian sigma (px)", lambda s: s > 0, "above 0", False),
    "downscale": Perturbation(_downscale, "scale", lambda s: 0 < s <= 1, "in (0, 1]", True),
    "noise": Perturbation(_noise, "noise std (0..255)", lambda s: s >= 0, "0 or more", False),
    "crop": Perturbation(_crop, "centre crop fraction", lambda f: 0 < f <= 1, "in (0, 1]", True),
}


def perturb(
    image: torch.Tensor, perturbation: str, severity: float | None, seed: int, index: int
) -> torch.Tensor:
    """``image`` (uint8, 3 x H x W) degraded by ``perturbation`` at ``severity``; the clean image as it is.
    Random draws depend on ``seed`` and the image's ``index`` alone: a rerun gives the same pixels."""
    if perturbation == CLEAN:
        return image
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return PERTURBATIONS[perturbation].apply(image, float(severity), generator)
