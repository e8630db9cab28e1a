"""Train and eval transforms: uint8 (3, H, W) in, uint8 (3, S, S) out; normalisation is in the model.

The training augmentation follows the Keras reference (RandomFlip("horizontal"), RandomRotation(0.1),
RandomZoom(0.1), RandomTranslation(0.1, 0.1), RandomContrast(0.1)) with torchvision transforms.v2.
Where torchvision differs from Keras:

- Rotation, zoom and translation are one ``RandomAffine`` (one resampling, not three).
- Keras's RandomRotation(0.1) is a fraction of a full turn: +-36 degrees. Translations are whole
  pixels in torchvision.
- Interpolation is nearest by default (Keras: bilinear): bilinear resampling is a low-pass filter
  that wipes out the pixel-level traces (period-2 upsampling patterns) a GAN detector looks for.
  Set ``interpolation="bilinear"`` for the Keras behaviour.
- Fill is a constant (0, black corners); Keras's default fill mode is "reflect".
- Contrast: torchvision blends with the mean of the grayscale image; Keras scales each channel about
  its own mean. Both draw the factor from [0.9, 1.1].
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

_INTERPOLATION = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR}


class ResizeIfNeeded(torch.nn.Module):
    """Resize (antialiased) only an image whose size is not already (size, size); a non-square one is
    resized on its short side and centre-cropped. The Kaggle files are 256 px, so usually a no-op."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if tuple(image.shape[-2:]) == (self.size, self.size):
            return image
        image = TF.resize(image, self.size, antialias=True)
        return TF.center_crop(image, [self.size, self.size])


def eval_transform(image_size: int) -> v2.Transform | torch.nn.Module:
    """Validation, test and prediction: resize when needed, nothing else."""
    return ResizeIfNeeded(image_size)


def train_transform(
    image_size: int,
    rotation: float = 0.1,
    zoom: float = 0.1,
    translate: float = 0.1,
    contrast: float = 0.1,
    flip: bool = True,
    interpolation: str = "nearest",
) -> v2.Compose:
    """The reference augmentation; `rotation` is a fraction of a full turn, as in Keras."""
    steps: list[torch.nn.Module] = [ResizeIfNeeded(image_size)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(
        v2.RandomAffine(
            degrees=360 * rotation,
            translate=(translate, translate),
            scale=(1 - zoom, 1 + zoom),
            interpolation=_INTERPOLATION[interpolation],
        )
    )
    if contrast:
        steps.append(v2.ColorJitter(contrast=contrast))
    return v2.Compose(steps)
