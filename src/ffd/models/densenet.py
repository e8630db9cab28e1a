"""DenseNet121 (or any timm backbone) with the reference Keras head: one logit per image, P(fake).

Reference head, after the backbone's global average pool::

    BatchNorm -> Dropout 0.5 -> Dense 256 ReLU (L2 1e-4 on its kernel) -> BatchNorm -> Dropout 0.4 -> Dense 1

The pooling is timm's own (``backbone.global_pool``, average for densenet121), so the backbone can be any
timm model. Scaling to 0..1 and the backbone's ImageNet normalisation happen inside, so the input is plain
RGB in 0..255.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

import timm
from huggingface_hub import constants as hf_constants
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from ffd.errors import WeightsError
from ffd.models.preprocess import Normalize
from ffd.options import load_failure

# torchvision's released densenet files predate the ban on '.' in module names: they hold keys like
# 'features.denseblock1.denselayer1.norm.1.weight' for today's '...denselayer1.norm1.weight'. This is the
# pattern torchvision (and timm) use to remap them.
_LEGACY_DENSELAYER_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


class DenseNetDetector(nn.Module):
    """A pretrained timm backbone and the reference head.

    Args:
        backbone: any timm model name; ``densenet121`` is the reference.
        pretrained: start from timm's ImageNet weights (downloaded once into ``cache_dir``).
        weights: a local ``.pth`` or ``.safetensors`` file of the same architecture, in timm or torchvision
            format; it takes precedence over ``pretrained`` and needs no network.
        hidden_dim: width of the hidden Dense layer (256 in the reference).
        l2: Keras-style L2 factor on the hidden layer's weight, see ``regularization_loss``.
        dropout: the two dropout rates of the head.
        image_size: recorded only (the network is fully convolutional), so configs can pass it.
        cache_dir: where timm keeps downloaded weights; ``None`` is the Hugging Face default cache.
    """

    def __init__(
        self,
        backbone: str = "densenet121",
        pretrained: bool = True,
        weights: str | None = None,
        hidden_dim: int = 256,
        l2: float = 1e-4,
        dropout: Sequence[float] = (0.5, 0.4),
        image_size: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.l2 = l2
        self.backbone = _create_backbone(backbone, pretrained, weights, cache_dir)
        cfg = self.backbone.pretrained_cfg
        self.normalize = Normalize(
            cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD)
        )
        width = self.backbone.num_features
        first_drop, second_drop = dropout
        self.head = nn.Sequential(
            OrderedDict(
                norm1=nn.BatchNorm1d(width),
                drop1=nn.Dropout(first_drop),
                fc1=nn.Linear(width, hidden_dim),
                act=nn.ReLU(),
                norm2=nn.BatchNorm1d(hidden_dim),
                drop2=nn.Dropout(second_drop),
                fc2=nn.Linear(hidden_dim, 1),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """RGB (B, 3, H, W), uint8 or float in 0..255 -> logits (B,)."""
        return self.head(self.backbone(self.normalize(x)))[:, 0]

    def regularization_loss(self) -> Tensor:
        """Keras ``kernel_regularizer=l2(1e-4)`` on the hidden layer: ``l2 * sum(W**2)``, added to the loss.

        Unlike AdamW's decoupled weight decay, this penalty goes through the gradient (and Adam's scaling).
        """
        return self.l2 * self.head.fc1.weight.square().sum()


def _create_backbone(name: str, pretrained: bool, weights: str | None, cache_dir: str | None) -> nn.Module:
    """timm model without its classifier (``num_classes=0``): pooled features (B, num_features)."""
    if weights is not None:
        backbone = timm.create_model(name, pretrained=False, num_classes=0)
        load_backbone_weights(backbone, weights)
        return backbone
    unreachable = hub_unreachable() if pretrained else None
    try:
        with hub_offline(unreachable is not None):
            return timm.create_model(name, pretrained=pretrained, num_classes=0, cache_dir=cache_dir)
    except OSError as error:  # no network, DNS failure, proxy, empty offline cache: all OSError subclasses
        why = f"{unreachable}; not in the cache either" if unreachable else f"{type(error).__name__}: {error}"
        raise WeightsError(
            f"Could not fetch timm's ImageNet weights for the backbone {name!r} ({why}). Offline? Either "
            f"pass a local copy with model.net.weights=PATH (a timm or torchvision {name} file, .pth or "
            ".safetensors) or train the whole network from random initialisation with "
            "model.net.pretrained=false callbacks.finetune=null."
        ) from error


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached, or None when it can or a proxy decides (not judged).

    Offline, huggingface_hub retries each request for about a minute before giving up; one connection
    attempt tells the same at once."""
    if any(os.environ.get(key) for key in PROXY_VARIABLES) or hf_constants.HF_HUB_OFFLINE:
        return None
    host = urlparse(hf_constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        return f"{host} cannot be reached: {error.strerror or error}"
    return None


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline mode (cached files only, no requests) for the duration, when asked."""
    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = before


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a timm- or torchvision-format file into ``backbone``, strictly except for the ImageNet classifier.

    ``.safetensors`` or a PyTorch file read with ``weights_only=True`` (never runs pickled code); training
    checkpoints that wrap the weights (``state_dict``, ``model``, EMA) are unwrapped by timm's reader.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"Backbone weights file {path} does not exist. Fix model.net.weights, or set "
            "model.net.weights=null (with model.net.pretrained=true to download, false for random init)."
        )
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as error:  # any failure here means "not a weights file we can read"
        raise WeightsError(
            f"{path} cannot be read as a weights file ({load_failure(error)}). Pass a .pth or "
            ".safetensors state dict; .pth files are read with weights_only=True, so files that need "
            "pickled code are refused."
        ) from error
    state = {_LEGACY_DENSELAYER_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    classifier = backbone.pretrained_cfg.get("classifier") or ()
    for name in (classifier,) if isinstance(classifier, str) else classifier:
        state.pop(f"{name}.weight", None)
        state.pop(f"{name}.bias", None)
    try:
        result = backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches: a different variant of the architecture
        raise WeightsError(
            f"{path} does not fit the backbone {_arch(backbone)}: {error}. Pass weights of the same "
            "architecture, or change model.net.backbone to match the file."
        ) from error
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path} does not fit the backbone {_arch(backbone)}: {_keys('missing', result.missing_keys)}; "
            f"{_keys('unexpected', result.unexpected_keys)}. Pass weights of the same architecture (timm or "
            "torchvision format), or change model.net.backbone to match the file."
        )


def _arch(backbone: nn.Module) -> str:
    return repr(backbone.pretrained_cfg.get("architecture", type(backbone).__name__))


def _keys(kind: str, keys: list[str], shown: int = 8) -> str:
    if not keys:
        return f"no {kind} keys"
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{len(keys)} {kind} keys ({', '.join(keys[:shown])}{more})"
