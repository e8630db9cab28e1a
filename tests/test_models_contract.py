"""The input contract every registered network keeps: RGB 0..255 as uint8 or float, contiguous or
channels_last, gives the same single logit per image."""

from __future__ import annotations

import pytest
import torch

from ffd.models import NETS, create_net

SMALL = {"densenet": {"pretrained": False}, "vit": {"image_size": 32}}


@pytest.mark.parametrize("name", sorted(NETS))
def test_one_logit_per_image_for_uint8_float_and_channels_last(name: str) -> None:
    net = create_net(name, **SMALL[name]).eval()
    images = torch.randint(
        0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        logits = net(images)
        as_float = net(images.float())
        channels_last = net(images.float().contiguous(memory_format=torch.channels_last))
    assert logits.shape == (3,)
    torch.testing.assert_close(as_float, logits)
    torch.testing.assert_close(channels_last, logits, rtol=1e-4, atol=1e-4)
