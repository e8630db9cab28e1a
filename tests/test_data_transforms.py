"""Transforms keep uint8, give the configured size, resize only when needed, and augment when asked."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from ffd.data.transforms import ResizeIfNeeded, eval_transform, train_transform


def test_eval_transform_leaves_an_image_of_the_right_size_untouched() -> None:
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert eval_transform(32)(image) is image


@pytest.mark.parametrize("shape", [(3, 48, 48), (3, 20, 30), (3, 64, 40)])
def test_resize_gives_uint8_at_the_configured_size(shape: tuple[int, int, int]) -> None:
    out = ResizeIfNeeded(32)(torch.randint(0, 256, shape, dtype=torch.uint8))
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)


def test_resize_is_antialiased() -> None:
    """A 1-px checkerboard halved must average to grey, not alias to one of its colours."""
    board = (
        ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 255).to(torch.uint8).expand(3, 64, 64)
    )
    out = ResizeIfNeeded(32)(board.contiguous())
    assert (out.float() - 127.5).abs().max() < 10


def test_train_transform_keeps_uint8_and_size_and_varies() -> None:
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    transform = train_transform(32)
    outs = [transform(image) for _ in range(4)]
    assert all(out.dtype == torch.uint8 and out.shape == (3, 32, 32) for out in outs)
    assert any(not torch.equal(outs[0], out) for out in outs[1:])


def test_train_transform_matches_the_keras_reference_ranges() -> None:
    transform = train_transform(64)
    affine = next(t for t in transform.transforms if isinstance(t, v2.RandomAffine))
    assert list(affine.degrees) == [-36.0, 36.0]  # RandomRotation(0.1) = 0.1 of a turn
    assert affine.translate == (0.1, 0.1) and affine.scale == (0.9, 1.1)
    assert any(isinstance(t, v2.RandomHorizontalFlip) for t in transform.transforms)
    jitter = next(t for t in transform.transforms if isinstance(t, v2.ColorJitter))
    assert jitter.contrast == (0.9, 1.1)


def test_translation_only_augmentation_moves_pixels_by_whole_pixels() -> None:
    """Flip and translation keep pixel values exactly (no resampling), so a pixel-level trace survives."""
    torch.manual_seed(1)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    transform = train_transform(32, rotation=0, zoom=0, contrast=0, flip=False)
    out = transform(image)
    shifts = [
        (dy, dx)
        for dy in range(-4, 5)
        for dx in range(-4, 5)
        if torch.equal(torch.roll(image, (dy, dx), (1, 2))[:, 4:-4, 4:-4], out[:, 4:-4, 4:-4])
    ]
    assert len(shifts) == 1
