"""ffd networks and their factory.

Every network maps RGB images (B, 3, H, W), uint8 or float in 0..255, to one logit per image (B,);
``sigmoid(logit)`` is P(fake). Networks are built by name from plain, JSON-able keyword arguments, so a
checkpoint's hyper-parameters are enough to rebuild one:

    net = create_net("densenet", pretrained=False)
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ffd.errors import UserError
from ffd.models.densenet import DenseNetDetector
from ffd.models.vit import VisionTransformer

NETS: dict[str, type[nn.Module]] = {"densenet": DenseNetDetector, "vit": VisionTransformer}

__all__ = ["NETS", "DenseNetDetector", "VisionTransformer", "create_net"]


def create_net(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with its constructor's keyword arguments."""
    if name not in NETS:
        raise UserError(f"Unknown network {name!r}. Set model.net.name to one of: {', '.join(sorted(NETS))}.")
    cls = NETS[name]
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"Network {name!r} does not take {', '.join(unknown)}; remove them from model.net. "
            f"It takes: {', '.join(accepted)}."
        )
    return cls(**kwargs)
