"""The reference ViT: shapes, the parameter count worked out by hand, and the attention arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from ffd.errors import UserError
from ffd.models import VisionTransformer
from ffd.models.vit import Attention


def _images(batch: int, size: int) -> torch.Tensor:
    return torch.randint(
        0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_parameter_count_matches_the_architecture_by_hand() -> None:
    image, patch, dim, heads, head_dim, mlp = 32, 8, 64, 6, 64, 128
    tokens = (image // patch) ** 2  # 16
    inner = heads * head_dim  # 384
    patch_embed = 3 * patch * patch * dim + dim  # Linear(192 -> 64): 12,352
    pos_embed = tokens * dim  # 1,024
    block = (
        2 * dim  # LayerNorm
        + 3 * (dim * inner + inner)  # query, key, value Dense 64 -> 384: 74,880
        + (inner * dim + dim)  # output Dense 384 -> 64: 24,640
        + 2 * dim  # LayerNorm
        + (dim * mlp + mlp)  # MLP Dense 64 -> 128: 8,320
        + (mlp * dim + dim)  # MLP Dense 128 -> 64: 8,256
    )  # 116,352
    final_norm = 2 * dim
    head = (dim * 1024 + 1024) + (1024 * 512 + 512) + (512 * 1 + 1)  # 66,560 + 524,800 + 513
    expected = patch_embed + pos_embed + 4 * block + final_norm + head
    assert expected == 1_070_785
    net = VisionTransformer(image_size=image)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_attention_is_softmax_qkT_v_per_head() -> None:
    torch.manual_seed(0)
    attention = Attention(dim=64, heads=6, head_dim=64, dropout=0.1).eval()
    x = torch.randn(2, 5, 64)
    qkv = x @ attention.qkv.weight.T + attention.qkv.bias  # (2, 5, 3 * 384): q | k | v, heads of 64
    q, k, v = qkv.split(384, dim=-1)
    outputs = []
    for h in range(6):
        part = slice(64 * h, 64 * (h + 1))
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(64)
        outputs.append(scores.softmax(dim=-1) @ v[..., part])
    expected = torch.cat(outputs, dim=-1) @ attention.proj.weight.T + attention.proj.bias
    with torch.no_grad():
        torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-5)


def test_attention_dropout_acts_only_in_training() -> None:
    torch.manual_seed(0)
    attention = Attention(dim=64, heads=6, head_dim=64, dropout=0.5)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        assert not torch.allclose(attention.train()(x), attention.eval()(x))


def test_structure_keeps_the_keras_layout() -> None:
    net = VisionTransformer(image_size=32)
    assert len(net.blocks) == 4 and net.pos_embed.shape == (1, 16, 64)
    mlp = [type(m).__name__ for m in net.blocks[0].mlp]
    assert mlp == ["Linear", "GELU", "Dropout", "Linear", "GELU", "Dropout"]
    head = [(type(m).__name__, getattr(m, "p", getattr(m, "out_features", None))) for m in net.head]
    assert head == [
        ("Dropout", 0.2), ("Linear", 1024), ("GELU", None),
        ("Dropout", 0.2), ("Linear", 512), ("GELU", None),
        ("Dropout", 0.1), ("Linear", 1),
    ]  # fmt: skip


def test_bad_sizes_are_refused_clearly() -> None:
    with pytest.raises(UserError, match="not a multiple of patch_size"):
        VisionTransformer(image_size=30)
    with pytest.raises(UserError, match="one rate per head layer"):
        VisionTransformer(image_size=32, head_dropout=(0.1,))
    with pytest.raises(ValueError, match=r"takes 32x32 images.*\(64, 64\).*data.image_size"):
        VisionTransformer(image_size=32)(_images(1, 64))


def test_pretrained_is_refused_since_no_weights_exist():
    assert VisionTransformer(image_size=32, pretrained=False)(_images(2, 32)).shape == (2,)
    with pytest.raises(UserError, match="trained from scratch"):
        VisionTransformer(image_size=32, pretrained=True)
