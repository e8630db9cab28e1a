"""PyTorch -> ONNX: the float32 export of a trained detector, and its float16 conversion.

The exported graph is the whole detector as a user calls it: RGB pixels 0..255 in (the network's own
``Normalize`` is inside it), P(fake) = sigmoid(logit) out, with a dynamic batch axis. It is written by
torch's ``torch.export``-based exporter (torch's default since 2.9; the TorchScript one is deprecated):
measured on both ffd networks, it gives the cleaner graph (no Identity / Constant chains, LayerNorm as one
``LayerNormalization`` node) at the same fp32 parity, for a slower export (~30 s for DenseNet121 on 2 cores).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from ffd.deploy.session import INPUT_NAME, OUTPUT_NAME, ModelInfo, set_metadata
from ffd.errors import CheckpointError
from ffd.models.classifier import DeepfakeClassifier

OPSET = 18
# Ops whose float16 arithmetic can overflow (sums of squares, exponentials, large reductions): they stay
# float32 in the fp16 model, behind casts. Added to onnxconverter-common's own list of ops without a
# float16 kernel. Sigmoid is not listed on purpose: it is bounded, and blocking the graph's last node makes
# onnxconverter-common 1.16 emit a float16 output despite keep_io_types.
FP16_FLOAT32_OPS = ("LayerNormalization", "ReduceMean", "Softmax", "Exp", "Pow")


class ProbabilityNet(nn.Module):
    """The exported function: RGB 0..255 (N, 3, S, S) -> P(fake) (N,)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return torch.sigmoid(self.net(image))


@contextmanager
def quiet(*loggers: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise these loggers' level for a while: the exporter and the quantizer log a line per tensor."""
    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


def model_info(model: DeepfakeClassifier, checkpoint_sha256: str, precision: str = "fp32") -> ModelInfo:
    """The metadata an exported file carries about the model it came from."""
    if not model.image_size:
        raise CheckpointError(
            f"{model.checkpoint_path or 'The model'} records no image size (model.net.image_size), which an "
            "ONNX file needs for its input shape. Retrain with ffd.train, which records it."
        )
    return ModelInfo(
        model=model.net_name,
        image_size=int(model.image_size),
        precision=precision,
        checkpoint_sha256=checkpoint_sha256,
        net=dict(model.hparams["net"]),
        card=dict(model.notes.get("card", {})),
        decision=dict(model.notes.get("decision", {})),
    )


def save_checked(proto: onnx.ModelProto, path: str | Path, info: ModelInfo) -> Path:
    """Stamp ``info`` into the model, run ``onnx.checker`` (with shape inference), write one file."""
    set_metadata(proto, info)
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, path)  # weights inside the file: ffd models are far below protobuf's 2 GB
    return path


def export_onnx(model: DeepfakeClassifier, path: str | Path, checkpoint_sha256: str) -> Path:
    """Write ``model`` as the fp32 ffd ONNX file at ``path`` (opset 18, dynamic batch, ffd metadata).

    ``checkpoint_sha256`` is the hash of the checkpoint the model was loaded from
    (``ffd.assets.sha256_of``), recorded so a deployed file can be traced back to its training run.
    """
    info = model_info(model, checkpoint_sha256)
    wrapped = ProbabilityNet(model.net).eval()
    # Two images: torch.export specialises a batch axis of size 1 into a constant.
    example = torch.zeros(2, 3, info.image_size, info.image_size)
    with warnings.catch_warnings(), quiet("onnx_ir", "onnxscript"):
        warnings.simplefilter("ignore")  # exporter chatter about its own internals, not about the model
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"image": {0: torch.export.Dim("batch")}},
            external_data=False,
            verbose=False,
        )
    assert program is not None
    return save_checked(program.model_proto, path, info)


def convert_fp16(source: str | Path, path: str | Path, info: ModelInfo) -> Path:
    """Float16 weights and compute with float32 input and output (``keep_io_types``); the ops in
    ``FP16_FLOAT32_OPS`` stay float32. For GPUs: a CPU runs most float16 ops through casts, slowly."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # One warning per weight below float16's range ("truncated to 1e-07"): expected, and thousands.
        warnings.simplefilter("ignore", UserWarning)
        half: Any = float16.convert_float_to_float16(
            onnx.load(source),
            keep_io_types=True,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP16_FLOAT32_OPS],
        )
    return save_checked(half, path, info)
