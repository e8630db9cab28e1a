"""Read an ffd checkpoint back: check that a file is one (weights only, no pickled code) and of the network
asked for, and rebuild the classifier from it for a run (eval, predict, export). Kept apart from the
LightningModule (ffd.models.classifier), which trains and never reads a user's file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import open_dict

from ffd.errors import CheckpointError
from ffd.models.classifier import DeepfakeClassifier
from ffd.models.notes import read_notes
from ffd.options import folder_instead_of_file, load_failure

log = logging.getLogger(__name__)


def read_checkpoint(path: str | Path, expected_net: str | None = None) -> dict[str, Any]:
    """A checkpoint written by ``ffd.train``, loaded with ``weights_only=True``; anything else (a folder, a
    missing file, another program's file, another network than ``expected_net``) is a CheckpointError."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(folder_instead_of_file(path, "ckpt_path", (".ckpt",)))
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Pass ckpt_path=PATH to a .ckpt written by ffd.train "
            "(in outputs/train/<timestamp>/checkpoints/)."
        )
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(
            f"{path} is an exported ONNX model; this command takes the .ckpt it was exported from "
            "(outputs/train/<timestamp>/checkpoints/). For the ONNX file's verdicts on a folder: "
            f"python -m ffd.predict input=FOLDER model={path}."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} cannot be read as a PyTorch checkpoint ({load_failure(error)}). ffd loads "
            "checkpoints with weights_only=True and never runs pickled code; pass a .ckpt written by "
            "ffd.train."
        ) from error
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    net = hparams.get("net") if isinstance(hparams, dict) else None
    if not isinstance(net, dict) or "name" not in net or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not an ffd checkpoint (no ffd network description in its hyper-parameters). Pass a "
            ".ckpt written by ffd.train."
        )
    if expected_net is not None and net["name"] != expected_net:
        raise CheckpointError(
            f"{path} holds a {net['name']!r} model, not the {expected_net!r} that was asked for: drop the "
            f"model override or pass model={net['name']}."
        )
    return checkpoint


def load_classifier(path: str | Path, expected_net: str | None = None) -> DeepfakeClassifier:
    """Rebuild a DeepfakeClassifier from a checkpoint written by ``ffd.train``, safely.

    Loaded with ``weights_only=True``; ImageNet weights are not fetched (the checkpoint has them all).
    """
    checkpoint = read_checkpoint(path, expected_net)
    hparams, net = checkpoint["hyper_parameters"], checkpoint["hyper_parameters"]["net"]
    # The checkpoint holds every weight: never fetch ImageNet weights or read a backbone file again.
    net = {**net, **{key: value for key, value in (("pretrained", False), ("weights", None)) if key in net}}
    model = DeepfakeClassifier(
        net=net, optimizer=hparams.get("optimizer"), scheduler=hparams.get("scheduler")
    )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: the weights do not fit the {net['name']!r} network: {error}"
        ) from error
    model.checkpoint_path = str(path)
    model.notes = read_notes(checkpoint)
    return model


def load_for_run(cfg: Any) -> DeepfakeClassifier:
    """The checkpoint ``cfg.ckpt_path`` of an eval or export run; ``cfg.data.image_size`` is set to the size
    its model was trained at, so the data is resized to what the model expects."""
    if not cfg.get("ckpt_path"):
        raise CheckpointError("No checkpoint given: pass ckpt_path=PATH to a .ckpt written by ffd.train.")
    model = load_classifier(cfg.ckpt_path)
    if model.image_size and cfg.data.get("image_size") != model.image_size:
        log.info(
            "data.image_size set to %s, the size the checkpoint's model was trained at.", model.image_size
        )
        with open_dict(cfg):
            cfg.data.image_size = model.image_size
            if cfg.data.get("synthetic"):  # generated at that size: its fake trace does not survive a resize
                cfg.data.synthetic.image_size = model.image_size
    return model
