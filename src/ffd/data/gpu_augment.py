"""The training augmentation of ``ffd.data.transforms.train_transform``, on a whole uint8 batch at once.

torchvision's v2 transforms applied to a batch tensor draw one set of parameters for all its images, and
per image in the DataLoader workers the CPU affine may not keep up with a GPU step. ``BatchAugment`` draws
a flip, an affine (angle, whole-pixel translation, scale) and a contrast factor per image with torch's
RNG on the batch's device (so ``seed_everything`` makes it reproducible), folds flip + affine into one
2x3 matrix per image and resamples the batch once with ``affine_grid`` + ``grid_sample`` (zeros padding =
fill 0), then blends with each image's grey mean and rounds back to uint8 (``output="float32"`` keeps the
rounded values as floats: the model converts its input to float anyway, so this skips a uint8 round trip).
Constants enter as Python scalars, never as tensors built on the host: copying one to the GPU would wait
for every queued kernel.
Same distributions and order (flip, affine, contrast) as the CPU pipeline; where the results differ:

- Nearest sampling: the grid is ``affine_grid``'s, not torchvision's own; where a sample point falls on
  a pixel boundary, float rounding can pick the neighbouring pixel (measured: 2 pixels in 100,000 at
  32 px; pure flips, whole-pixel shifts and 90-degree turns are identical).
- One rounding at the end. The CPU pipeline rounds after the affine, then truncates after the contrast
  blend (torchvision's uint8 cast), which darkens by half a grey level on average; here values round, so
  a pixel can differ by 1. The grey mean uses unfloored grey values (torchvision floors each for uint8).
- Bilinear: torchvision multiplies the image by its resampled fill mask, which darkens the one-pixel rim
  along the black fill a second time; here the rim is only blended with the zero padding once.
- No resize: images must already have the training size (``ResizeIfNeeded`` runs in the workers), and no
  blur + JPEG (``data.augment.blur_jpeg_prob``): a JPEG encoder runs on the CPU, so the workers do it
  before the batch is formed, in the CPU pipeline's order (``ffd.data.transforms.worker_steps``).
- Settings that make every step the identity (the synthetic set's) return the batch as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# _INTERPOLATION: the CPU pipeline's modes, grid_sample's names too
from ffd.data.transforms import _INTERPOLATION, AugmentError

# torchvision's rgb_to_grayscale weights (ITU-R 601), which its adjust_contrast blends towards
_GREY = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentParams:
    """Per-image parameters, all on the batch's device, in torchvision's conventions.

    flip: bool (B,), mirror left-right before the affine. angle: float (B,), degrees clockwise (as
    torchvision's affine). translate: float (B, 2), whole pixels (x right, y down). scale: float (B,).
    contrast: float (B,), the blend factor towards the grey mean, or None for no contrast step.
    """

    flip: torch.Tensor
    angle: torch.Tensor
    translate: torch.Tensor
    scale: torch.Tensor
    contrast: torch.Tensor | None


OUTPUTS = ("uint8", "float32")


class BatchAugment(torch.nn.Module):
    """Random flip, rotation, zoom, translation and contrast, drawn independently for each image of a
    uint8 (B, 3, H, W) batch on its device; the arguments are ``train_transform``'s (`rotation` is a
    fraction of a full turn, as in Keras). `output` is the augmented batch's dtype: the same whole values
    0..255 either way."""

    def __init__(
        self,
        rotation: float = 0.1,
        zoom: float = 0.1,
        translate: float = 0.1,
        contrast: float = 0.1,
        flip: bool = True,
        interpolation: str = "nearest",
        output: str = "uint8",
    ) -> None:
        super().__init__()
        problems = [
            f"{name}={value} (allowed: {allowed})"
            for name, value, ok, allowed in (
                ("rotation", rotation, rotation >= 0, ">= 0, a fraction of a full turn"),
                ("zoom", zoom, 0 <= zoom < 1, "0 <= zoom < 1"),
                ("translate", translate, 0 <= translate <= 1, "0..1, a fraction of the image size"),
                ("contrast", contrast, contrast >= 0, ">= 0"),
                ("interpolation", interpolation, interpolation in _INTERPOLATION, ", ".join(_INTERPOLATION)),
                ("output", output, output in OUTPUTS, ", ".join(OUTPUTS)),
            )
            if not ok
        ]
        if problems:
            raise AugmentError(
                f"Invalid augmentation setting: {'; '.join(problems)}. Fix `augment` in the data config "
                "(conf/data/*.yaml, or data.augment.NAME=VALUE on the command line)."
            )
        self.rotation, self.zoom, self.translate, self.contrast = rotation, zoom, translate, contrast
        self.flip, self.interpolation = flip, interpolation
        self.output = getattr(torch, output)

    def sample_params(
        self, batch_size: int, size: tuple[int, int], device: torch.device | str | None = None
    ) -> AugmentParams:
        """Draw one set of parameters per image of a batch of (height, width) = `size` images, with the
        distributions of ``train_transform``'s RandomHorizontalFlip, RandomAffine and ColorJitter."""
        height, width = size

        def uniform(*shape: int, low: float, high: float) -> torch.Tensor:
            return torch.empty(*shape, device=device).uniform_(low, high)

        degrees = 360 * self.rotation
        shift = uniform(batch_size, 2, low=-self.translate, high=self.translate)
        shift[:, 0] *= width
        shift[:, 1] *= height
        return AugmentParams(
            flip=(torch.rand(batch_size, device=device) < 0.5) & self.flip,
            angle=uniform(batch_size, low=-degrees, high=degrees),
            # torchvision rounds a uniform shift to whole pixels (half to even, as Python's round)
            translate=shift.round_(),
            scale=uniform(batch_size, low=1 - self.zoom, high=1 + self.zoom),
            contrast=uniform(batch_size, low=max(0.0, 1 - self.contrast), high=1 + self.contrast)
            if self.contrast
            else None,
        )

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment uint8 (B, 3, H, W) `images` with the given per-image parameters: one resampling in
        float32, one blend, one rounding to whole values (cast back to uint8 unless `output` is float32)."""
        if images.numel() == 0:
            return images
        height, width = images.shape[-2:]
        out = F.grid_sample(
            images.float(),
            F.affine_grid(_theta(params, height, width), list(images.shape), align_corners=False),
            mode=self.interpolation,
            padding_mode="zeros",
            align_corners=False,
        )
        if params.contrast is not None:
            factor = params.contrast.view(-1, 1, 1, 1)
            channel_means = out.mean(dim=(2, 3), keepdim=True)
            mean = sum(weight * channel_means[:, c : c + 1] for c, weight in enumerate(_GREY))
            out.mul_(factor).add_(mean * (1 - factor))
        return out.round_().clamp_(0, 255).to(self.output)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> `output` (B, 3, H, W) on the same device, each image with its own draw;
        settings that change nothing return the uint8 batch itself."""
        if not (self.flip or self.rotation or self.zoom or self.translate or self.contrast):
            return images
        return self.apply(images, self.sample_params(images.shape[0], images.shape[-2:], images.device))


def _theta(params: AugmentParams, height: int, width: int) -> torch.Tensor:
    """(B, 2, 3) matrices for ``affine_grid``: output -> input sample positions, in its [-1, 1] units.

    In pixel units about the image centre this is torchvision's ``_get_inverse_affine_matrix`` without
    shear: x_in = R(angle)^-1 / scale @ (x_out - translate); a flip before the affine mirrors x_in.
    """
    angle = params.angle * (math.pi / 180)
    cos, sin = torch.cos(angle) / params.scale, torch.sin(angle) / params.scale
    linear = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (B, 2, 2)
    offset = -(linear @ params.translate.unsqueeze(-1))  # (B, 2, 1)
    matrix = torch.cat([linear, offset], -1)
    mirror = torch.where(params.flip, -1.0, 1.0)
    matrix[:, 0] *= mirror.view(-1, 1)
    # pixels -> affine_grid's units: divide the output row i by half_i, multiply the input column j by half_j
    half = (width / 2, height / 2)
    for j, half_j in enumerate(half):
        matrix[:, :, j] *= half_j
    for i, half_i in enumerate(half):
        matrix[:, i] /= half_i
    return matrix
