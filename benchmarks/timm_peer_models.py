"""ffd's two networks as timm models, and a launcher that runs timm's own train.py with them registered.

    python benchmarks/timm_peer_models.py [--image-size 256] TRAIN_PY [train.py's arguments ...]

timm's train.py builds its network with ``timm.create_model(args.model, ...)``, so a network timm does not
ship must be in timm's registry before the script starts. Importing this module registers two names,
without touching timm's files:

- ``ffd_vit``: ffd's reference VisionTransformer (``ffd.models.vit``), unchanged;
- ``ffd_densenet``: ffd's DenseNetDetector (timm's densenet121 backbone and the reference head), unchanged.

The launcher then runs train.py as ``__main__`` (``runpy.run_path``) with ``sys.argv`` set, as
``python TRAIN_PY ...`` would. benchmarks/timm_peer.py uses it for the ViT; for DenseNet121 the peer is
timm's own ``densenet121`` (no launcher needed), and ``ffd_densenet`` is there to compare ffd's exact
network if wanted (``--densenet-peer ffd``).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path
from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from ffd.models import create_net

# The side of the ViT built when train.py does not pass one (its --model-kwargs img_size=N would); the
# launcher's --image-size sets it, since the ViT's position embedding is sized for one input size.
DEFAULT_IMAGE_SIZE = 256

# What timm.create_model hands every model function besides the model's own keyword arguments, and what
# train.py passes for its options (None ones are dropped by create_model): accepted and, where they would
# change the network, checked.
_FACTORY_KEYS = {
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "cache_dir",
    "drop_rate",
    "drop_path_rate",
    "drop_block_rate",
    "global_pool",
    "bn_momentum",
    "bn_eps",
    "device",
    "dtype",
    "scriptable",
}


class TwoLogits(nn.Module):
    """An ffd network with the (B, 2) class scores that timm's train.py, its losses and its accuracy expect.

    ffd's networks return one logit per image, ``sigmoid(logit)`` = P(fake); timm's cross-entropy wants one
    score per class. ``[-logit / 2, logit / 2]`` is the pair whose softmax is ``[1 - sigmoid(logit),
    sigmoid(logit)]`` (the softmax of (a, b) is ``sigmoid(b - a)``): the same network, the same
    probability, and for hard labels the same loss as ffd's BCE-with-logits; the stack costs nothing.

    ffd's networks normalise inside (RGB in 0..255). ``pretrained_cfg`` says mean 0 and std 1/255, so
    timm's loader (prefetcher or not) hands them 0..255 floats and the network does the rest, as in ffd.
    """

    def __init__(self, net: nn.Module, image_size: int) -> None:
        super().__init__()
        self.net = net
        self.num_classes = 2
        self.pretrained_cfg = {
            "input_size": (3, image_size, image_size),
            "interpolation": "bilinear",
            "mean": (0.0, 0.0, 0.0),
            "std": (1 / 255, 1 / 255, 1 / 255),
            "crop_pct": 1.0,
            "crop_mode": "center",
            "num_classes": 2,
        }

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) in 0..255 -> class scores (B, 2): [real, fake]."""
        logit = self.net(x)
        return torch.stack([-logit / 2, logit / 2], dim=1)


def _check(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments left for ffd's network, after refusing what it cannot honour."""
    if kwargs.pop("pretrained", False):
        raise ValueError(f"{name} has no timm weights: leave out --pretrained (ffd trains it from scratch).")
    if (chans := kwargs.pop("in_chans", 3)) != 3:
        raise ValueError(f"{name} takes RGB images: in_chans must be 3, got {chans}.")
    if (classes := kwargs.pop("num_classes", 2)) not in (None, 2):
        raise ValueError(f"{name} is a real/fake detector: --num-classes must be 2, got {classes}.")
    for key in _FACTORY_KEYS:
        kwargs.pop(key, None)
    return kwargs


def _image_size(kwargs: dict[str, Any]) -> int:
    return int(kwargs.pop("img_size", None) or kwargs.pop("image_size", None) or DEFAULT_IMAGE_SIZE)


@register_model
def ffd_vit(**kwargs: Any) -> TwoLogits:
    """ffd's reference ViT (8x8 patches, 64-d, 4 blocks) for timm's train.py; from scratch."""
    kwargs = _check("ffd_vit", kwargs)
    size = _image_size(kwargs)
    return TwoLogits(create_net("vit", image_size=size, **kwargs), size)


@register_model
def ffd_densenet(**kwargs: Any) -> TwoLogits:
    """ffd's DenseNet121 detector (timm's densenet121 backbone, the reference head); random weights."""
    kwargs = _check("ffd_densenet", kwargs)
    size = _image_size(kwargs)
    return TwoLogits(create_net("densenet", pretrained=False, image_size=size, **kwargs), size)


def launch(train_py: str | Path, arguments: list[str]) -> None:
    """Run ``python train_py arguments`` in this process, with ffd's networks in timm's registry."""
    path = Path(train_py).resolve()
    sys.argv = [str(path), *arguments]
    sys.path.insert(0, str(path.parent))  # as `python train.py` puts the script's folder first
    runpy.run_path(str(path), run_name="__main__")


def main() -> None:
    global DEFAULT_IMAGE_SIZE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="the ViT's input side")
    parser.add_argument("train_py", help="timm's train.py")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="train.py's arguments")
    args = parser.parse_args()
    DEFAULT_IMAGE_SIZE = args.image_size
    launch(args.train_py, args.arguments)


if __name__ == "__main__":
    main()
