"""Input normalisation shared by every ffd network: RGB pixels in 0..255 in, normalised floats out.

It lives inside the model so that the data pipeline ships uint8 tensors to the device (4x less traffic than
float32) and an exported model takes plain RGB pixels, with no preprocessing contract to get wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn


class Normalize(nn.Module):
    """``(x / 255 - mean) / std`` per channel, for uint8 or float RGB input of shape (B, 3, H, W).

    Computed as one multiply-add with constants folded at construction; the constants are
    non-persistent buffers, so they follow ``.to(device, dtype)`` but stay out of checkpoints.
    """

    def __init__(
        self, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD
    ) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", mean_t / std_t, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"Expected RGB images as a (batch, 3, height, width) tensor, got shape {tuple(x.shape)}. "
                "Convert channels-last arrays with x.permute(0, 3, 1, 2) and gray images to 3 channels."
            )
        # The cast follows the model's dtype (float32, or half/bfloat16 for a converted model).
        return x.to(self.scale.dtype) * self.scale - self.shift
