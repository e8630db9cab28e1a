"""The reference Vision Transformer (the Keras ViT example, sized for 256 px faces), trained from scratch.

    8x8 patches -> Linear 64 + learned position embedding
    -> 4 x [LayerNorm -> MultiHeadAttention(6 heads, key_dim 64) -> residual
            -> LayerNorm -> MLP 128 -> 64 (GELU + dropout after each) -> residual]
    -> LayerNorm -> mean over tokens -> Dropout 0.2 -> Dense 1024 GELU -> Dropout 0.2 -> Dense 512 GELU
    -> Dropout 0.1 -> Dense 1

Keras details kept: ``MultiHeadAttention(num_heads=6, key_dim=64)`` projects the 64-d tokens to 6 x 64 = 384
for queries, keys and values and back to 64 after attending; its ``dropout`` acts on the attention
probabilities (not on the output projection); the example's ``mlp`` puts GELU and dropout after *every*
Dense layer, the second one included; LayerNorm epsilon 1e-6; Dense weights glorot-uniform with zero
biases; position embedding uniform in +-0.05.

Default input size 256 px: the faces come at 256 px, and resizing them down (with antialiasing) low-passes
the images, attenuating the high-frequency GAN traces the detector needs. 256 px with 8 px patches means
1,024 tokens, which ``scaled_dot_product_attention`` (flash / memory-efficient kernels) handles on a GPU;
``image_size=128`` (256 tokens) is the cheap option.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ffd.errors import UserError
from ffd.models.preprocess import Normalize


class Attention(nn.Module):
    """Keras ``MultiHeadAttention(num_heads, key_dim=head_dim)`` used as self-attention."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)  # Keras' query, key and value Dense, fused
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        # (B, N, 3 * H * D) -> three (B, H, N, D)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
        # softmax(q k^T / sqrt(D)) v, with dropout on the attention probabilities while training.
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(x.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim),
            nn.GELU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """The reference ViT; input RGB (B, 3, image_size, image_size) in 0..255, output one logit per image.

    Args:
        image_size: side of the (square) input; the data pipeline resizes to it.
        patch_size: side of the non-overlapping patches.
        dim: token width (Keras ``projection_dim``).
        depth: number of transformer blocks.
        heads, head_dim: attention heads and their key size (Keras ``num_heads``, ``key_dim``).
        mlp_dim: hidden width of each block's MLP (its output is ``dim``).
        dropout: attention-probability and MLP dropout.
        head_dims: hidden widths of the classification head.
        head_dropout: dropout before each head layer (one more than ``head_dims``).
        pretrained: there are no pretrained weights for this network; accepted so that one config
            (``model.net.pretrained=false``) fits every model, and ``True`` is refused.
    """

    def __init__(
        self,
        image_size: int = 256,
        patch_size: int = 8,
        dim: int = 64,
        depth: int = 4,
        heads: int = 6,
        head_dim: int = 64,
        mlp_dim: int = 128,
        dropout: float = 0.1,
        head_dims: Sequence[int] = (1024, 512),
        head_dropout: Sequence[float] = (0.2, 0.2, 0.1),
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if pretrained:
            raise UserError(
                "The reference ViT is trained from scratch: no pretrained weights exist for it. Set "
                "model.net.pretrained=false (or leave it out)."
            )
        if image_size % patch_size:
            raise UserError(
                f"ViT image_size={image_size} is not a multiple of patch_size={patch_size}: set "
                f"data.image_size to a multiple of {patch_size} (model.net.image_size follows it), e.g. 256 "
                "or 128."
            )
        if len(head_dropout) != len(head_dims) + 1:
            raise UserError(
                f"ViT head_dropout needs one rate per head layer, {len(head_dims) + 1} for head_dims="
                f"{list(head_dims)}; got {list(head_dropout)}."
            )
        self.image_size = image_size
        self.normalize = Normalize()
        # A Linear map of each flattened 8x8x3 patch, computed as a strided convolution.
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.empty(1, (image_size // patch_size) ** 2, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, head_dim, mlp_dim, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        layers: list[nn.Module] = []
        width = dim
        for hidden, rate in zip(head_dims, head_dropout[:-1], strict=True):
            layers += [nn.Dropout(rate), nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers += [nn.Dropout(head_dropout[-1]), nn.Linear(width, 1)]
        self.head = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        """Keras defaults: glorot-uniform kernels, zero biases, uniform(-0.05, 0.05) embedding."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
                nn.init.zeros_(module.bias)
        nn.init.uniform_(self.pos_embed, -0.05, 0.05)

    def forward(self, x: Tensor) -> Tensor:
        """RGB (B, 3, image_size, image_size), uint8 or float in 0..255 -> logits (B,)."""
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"This ViT takes {self.image_size}x{self.image_size} images (its position embedding is "
                f"sized for them), got {tuple(x.shape[-2:])}. Resize the input (data.image_size) or build "
                "the model with a matching model.net.image_size."
            )
        x = self.patch_embed(self.normalize(x)).flatten(2).transpose(1, 2) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))[:, 0]
