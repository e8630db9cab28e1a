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

``blur_jpeg_prob`` adds CNNDetection's degradation (Wang et al., "CNN-generated images are surprisingly
easy to spot... for now", 2020): a detector trained on pristine files learns traces that one JPEG
re-encoding or a slight blur erases. It runs right after the resize, before the flip and affine (as
CNNDetection degrades the loaded image before its crop and flip), so the GPU path can leave it to the
loader workers and keep the same order.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ffd.errors import UserError
from ffd.trust.perturbations import perturb

BLUR_SIGMA = (0.0, 3.0)  # CNNDetection's sigma range, drawn uniformly
JPEG_QUALITY = (30, 100)  # its quality range, drawn uniformly, both ends included

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


class AugmentError(UserError):
    """An augmentation setting outside its range."""


def check_blur_jpeg_prob(prob: Any) -> None:
    """Refuse a ``data.augment.blur_jpeg_prob`` that is not a probability, before any file is read."""
    if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0 <= prob <= 1:
        raise AugmentError(
            f"data.augment.blur_jpeg_prob={prob} is not a probability: it is the chance that a training "
            "image is blurred, and independently the chance that it is JPEG re-encoded. Give a number from "
            "0 (off, the default) to 1, e.g. data.augment.blur_jpeg_prob=0.5 as in CNNDetection."
        )


class RandomBlurJpeg(torch.nn.Module):
    """With probability ``prob`` a Gaussian blur of sigma ~ U(0, 3), then independently with probability
    ``prob`` a JPEG re-encoding at a quality ~ U{30..100}, on a uint8 (3, H, W) image.

    The blur and the encoder are the evaluation's own (``ffd.trust.perturbations``), so training sees the
    degradations it is tested on. The draws use torch's global RNG, as torchvision's transforms do, so
    each loader worker's seed (Lightning's ``seed_everything(workers=True)``) fixes them. The label is never
    seen: real and fake images are degraded alike."""

    def __init__(self, prob: float) -> None:
        super().__init__()
        check_blur_jpeg_prob(prob)
        self.prob = float(prob)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # seed and index only feed random perturbations (noise); blur and JPEG draw nothing
        if torch.rand(()) < self.prob:
            sigma = float(torch.empty(()).uniform_(*BLUR_SIGMA))
            if sigma > 0:  # sigma 0 is no blur (torchvision refuses it)
                image = perturb(image, "blur", sigma, seed=0, index=0)
        if torch.rand(()) < self.prob:
            quality = int(torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, ()))
            image = perturb(image, "jpeg", quality, seed=0, index=0)
        return image

    def extra_repr(self) -> str:
        return f"prob={self.prob}"


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
    blur_jpeg_prob: float = 0.0,
) -> v2.Compose:
    """The reference augmentation; `rotation` is a fraction of a full turn, as in Keras. A step whose
    settings make it the identity is left out (the synthetic set's config sets them all to 0)."""
    steps = worker_steps(image_size, blur_jpeg_prob)
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if rotation or zoom or translate:
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


def worker_steps(image_size: int, blur_jpeg_prob: float = 0.0) -> list[torch.nn.Module]:
    """What the loader workers do to a training image before the flip and affine: the resize, and the
    blur + JPEG when asked (a CPU encoder: the GPU path, ``augment_on=gpu``, keeps it in the workers)."""
    steps: list[torch.nn.Module] = [ResizeIfNeeded(image_size)]
    if blur_jpeg_prob:  # left out at 0: its draws would change the later steps' random stream
        steps.append(RandomBlurJpeg(blur_jpeg_prob))
    return steps
