"""Grad-CAM heatmaps for a DeepfakeClassifier: where in a face the evidence for its verdict lies.

A late layer's activations times their gradient, one forward and one backward pass per batch: about as
cheap as a training step, where an occlusion map costs one forward pass per occluded patch. The heatmap is
of the verdict's own class: evidence for "fake" where the model calls an image fake (the logit's
gradient), for "real" where it calls it real (the negated logit's).

The variant is HiResCAM (grad-cam's HiResCAM class): Grad-CAM without averaging the gradient over the
positions first. On DenseNet, whose head pools the layer's map, the gradient is the same at every position
and the two maps are identical. On the ViT they are not: on a one-block ViT trained to find a trace drawn
in the lips only (tests/test_faces_explain.py), Grad-CAM put 2x the lips' area share on the lips, HiResCAM
8-9x.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pytorch_grad_cam import HiResCAM
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
from torch import Tensor, nn

from ffd.errors import UserError
from ffd.models.classifier import DeepfakeClassifier
from ffd.models.densenet import DenseNetDetector
from ffd.models.vit import VisionTransformer


class ExplainError(UserError):
    """A model or file that cannot be explained."""


def refuse_onnx_explain(path: str | Path, key: str = "model") -> ExplainError:
    """The error for explain=true on an exported ONNX model (``key``: the option that named it): Grad-CAM
    needs the network's gradients."""
    return ExplainError(
        f"{key}={path} is an exported ONNX model, and explain=true needs the .ckpt (Grad-CAM needs "
        f"gradients, which an ONNX file does not give): pass {key}=<the .ckpt it was exported from> "
        "(outputs/train/<timestamp>/checkpoints/)."
    )


class _LogitColumn(nn.Module):
    """The classifier with (N, 1) output: grad-cam indexes each image's output by class."""

    def __init__(self, classifier: DeepfakeClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(images)[:, None]


class _TokensToGrid:
    """ViT tokens (N, T, C) -> (N, C, H/p, W/p), the layout Grad-CAM averages gradients over. The ffd ViT
    pools the mean of its tokens and has no class token: every token is a patch."""

    def __init__(self, side: int) -> None:
        self.side = side

    def __call__(self, tokens: Tensor) -> Tensor:
        return tokens.transpose(1, 2).unflatten(2, (self.side, self.side))


def _target_layer(net: nn.Module) -> tuple[nn.Module, _TokensToGrid | None]:
    """The layer to explain and, for the ViT, the reshape of its tokens.

    ViT: the tokens entering the last block's attention (its first LayerNorm), as grad-cam's own ViT
    recipe does. The block's output is no map of the face: its attention has spread what one patch showed
    over every token (on a one-block ViT trained on a trace in the lips, the output's heatmap put 1.4x
    the lips' area share on them, its input's 8x)."""
    if isinstance(net, VisionTransformer):
        side = net.image_size // net.patch_embed.kernel_size[0]
        return net.blocks[-1].norm1, _TokensToGrid(side)
    if isinstance(net, DenseNetDetector):  # timm names its last feature map (densenet121: features.norm5)
        return net.backbone.get_submodule(net.backbone.feature_info[-1]["module"]), None
    raise ExplainError(
        f"Grad-CAM knows the layers of ffd's densenet and vit networks, not {type(net).__name__}: explain "
        "a checkpoint of one of those (model.net.name=densenet or vit)."
    )


class GradCam:
    """Grad-CAM (HiResCAM) over a DeepfakeClassifier, on the device its weights are on; a context manager
    that removes its hooks and restores the model's training mode on exit.

    Gradients flow to the target layer's activations, not to the weights: the input is made to require
    them, so a model frozen for fine-tuning (``requires_grad=False`` everywhere) is explained as well."""

    def __init__(self, classifier: DeepfakeClassifier) -> None:
        self.classifier = classifier
        self._was_training = classifier.training
        layer, reshape = _target_layer(classifier.net)
        self._cam = HiResCAM(_LogitColumn(classifier), [layer], reshape_transform=reshape)  # sets eval mode

    def __enter__(self) -> GradCam:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._cam.activations_and_grads.release()
        self.classifier.train(self._was_training)

    def heatmaps(self, images: Tensor, fake: Sequence[bool] | None = None) -> np.ndarray:
        """RGB images (N, 3, S, S), uint8 or float in 0..255 -> (N, S, S) float32 in [0, 1], each scaled
        to its own maximum (all 0 where nothing speaks for the class). ``fake``: the class to find evidence
        for per image; by default the model's own verdict at P(fake) > 0.5."""
        device = next(self.classifier.parameters()).device
        inputs = images.to(device, torch.float32).requires_grad_(True)
        if fake is None:
            with torch.no_grad():
                fake = (self.classifier(inputs) > 0).tolist()
        if len(fake) != len(inputs):
            raise ValueError(f"{len(fake)} verdicts given for {len(inputs)} images")
        targets = [BinaryClassifierOutputTarget(int(bool(is_fake))) for is_fake in fake]
        with torch.enable_grad():  # also under Lightning's inference mode or a caller's no_grad
            maps = self._cam(inputs, targets)
        self._cam.activations_and_grads.clear()
        return np.clip(maps, 0.0, 1.0).astype(np.float32)
