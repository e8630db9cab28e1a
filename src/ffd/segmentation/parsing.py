"""BiSeNet face parsing (facexlib's network and release weights): 19 CelebAMask-HQ classes per pixel.

facexlib's own `init_parsing_model` loads the file with a plain `torch.load`, which may run pickled code
from the file. So the network is built from facexlib's BiSeNet class and the state dict is loaded here
with `weights_only=True`, after ffd.assets has checked the file's sha256. facexlib itself never downloads.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ffd.assets import ASSETS, AssetError
from ffd.options import load_failure

PARSING_URL = ASSETS["parsing_bisenet.pth"].url

# CelebAMask-HQ's classes in the order of the network's outputs; left/right as the dataset annotates them.
PARSING_CLASSES: tuple[str, ...] = (
    "background",
    "skin",
    "left_brow",
    "right_brow",
    "left_eye",
    "right_eye",
    "eyeglasses",
    "left_ear",
    "right_ear",
    "earring",
    "nose",
    "mouth",
    "upper_lip",
    "lower_lip",
    "neck",
    "necklace",
    "cloth",
    "hair",
    "hat",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FaceParser:
    """Whole image -> size x size -> BiSeNet -> labels, resized back to the image (nearest, as in the
    reference implementation)."""

    def __init__(self, weights: str | Path, device: str = "cpu", half: bool = False, size: int = 512) -> None:
        from facexlib.parsing.bisenet import BiSeNet  # imports all of facexlib (seconds): only when parsing

        self.device = torch.device(device)
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        self.size = size
        net = BiSeNet(num_class=len(PARSING_CLASSES))
        try:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, TypeError) as error:
            raise AssetError(
                f"{weights}: not the weights of facexlib's BiSeNet face parser ({load_failure(error)}). Use "
                f"facexlib's parsing_bisenet.pth ({PARSING_URL}) or a state dict saved from "
                "facexlib.parsing.bisenet.BiSeNet(num_class=19)."
            ) from error
        self.net = net.eval().to(self.device, self.dtype)

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """RGB uint8 (3, H, W) -> class indices uint8 (H, W)."""
        height, width = image.shape[-2:]
        x = TF.resize(image, [self.size, self.size], antialias=True).to(self.device)
        x = TF.normalize(x.float().div(255), IMAGENET_MEAN, IMAGENET_STD).to(self.dtype)
        logits = self.net(x.unsqueeze(0))[0]  # main head; the two auxiliary heads are for training
        labels = logits.argmax(dim=1, keepdim=True).to(torch.uint8)
        return F.interpolate(labels, size=(height, width), mode="nearest-exact")[0, 0].cpu()
