"""The ffd ONNX file contract, and running such a file with onnxruntime.

An exported detector takes RGB pixels in 0..255 as float32 (N, 3, S, S) under the input name ``image``
and returns P(fake) per image, float32 (N,), under ``p_fake``: preprocessing and the sigmoid are in the
graph, so serving it needs no ffd code. What the file is (network, image size, label convention, ffd
version, the checkpoint it came from, its precision) is in the model's metadata, under ``ffd.*`` keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffd import LABELS, __version__
from ffd.errors import UserError

INPUT_NAME = "image"
OUTPUT_NAME = "p_fake"
PRECISIONS = ("fp32", "fp16", "int8")
_PREFIX = "ffd."


class OnnxModelError(UserError):
    """An .onnx file that is missing, unreadable or not an ffd detector."""


@dataclass(frozen=True)
class ModelInfo:
    """What an exported file says about itself (stored as ``ffd.<field>`` metadata strings)."""

    model: str  # network name: densenet, vit
    image_size: int
    precision: str  # fp32, fp16, int8
    checkpoint_sha256: str
    net: dict[str, Any] = field(default_factory=dict)  # the network's full description
    labels: dict[str, str] = field(default_factory=lambda: {str(k): v for k, v in LABELS.items()})
    output: str = "P(fake): probability that the face is GAN-generated; label 1 = fake, 0 = real"
    input: str = "RGB pixels 0..255, float32, (N, 3, image_size, image_size)"
    ffd_version: str = __version__
    # The checkpoint's notes (ffd.models.notes): what it was trained on, and its decision rule.
    card: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        """Flat string pairs for ``ModelProto.metadata_props`` (JSON for the non-string fields)."""
        return {
            _PREFIX + key: json.dumps(value) if key in _JSON_FIELDS else str(value)
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str | Path = "<model>") -> ModelInfo:
        values = {key[len(_PREFIX) :]: value for key, value in metadata.items() if key.startswith(_PREFIX)}
        missing = [name for name in ("model", "image_size", "precision") if name not in values]
        if missing:
            raise OnnxModelError(
                f"{source} is an ONNX file but not an ffd detector (no ffd.{', ffd.'.join(missing)} "
                "metadata). Export one with: python -m ffd.export ckpt_path=CKPT."
            )
        known = {name: value for name, value in values.items() if name in cls.__dataclass_fields__}
        return cls(**{name: json.loads(v) if name in _JSON_FIELDS else v for name, v in known.items()})


_JSON_FIELDS = frozenset({"image_size", "net", "labels", "card", "decision"})


def set_metadata(model: Any, info: ModelInfo) -> None:
    """Write ``info`` into an ``onnx.ModelProto``'s metadata, replacing earlier ffd keys."""
    keep = [prop for prop in model.metadata_props if not prop.key.startswith(_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in info.to_metadata().items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def default_providers() -> list[str]:
    """CUDA first where this onnxruntime build has it, the CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxDetector:
    """An exported ffd detector in an onnxruntime session: uint8 or float RGB batches in, P(fake) out.

    Args:
        path: the .onnx file.
        providers: onnxruntime execution providers; default CUDA (if present) then CPU.
        threads: intra-op threads (default: onnxruntime's own choice, one per core).
    """

    def __init__(
        self, path: str | Path, providers: list[str] | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(
                f"Model file {self.path} does not exist. Pass the .onnx written by python -m ffd.export "
                "(in outputs/export/<timestamp>/) or a .ckpt written by ffd.train."
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                os.fspath(self.path), options, providers=providers or default_providers()
            )
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise OnnxModelError(
                f"{self.path} cannot be loaded by onnxruntime ({type(error).__name__}: "
                f"{str(error).splitlines()[0]}). Re-export it with python -m ffd.export ckpt_path=CKPT."
            ) from error
        self.info = ModelInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != ([INPUT_NAME], [OUTPUT_NAME]):
            raise OnnxModelError(
                f"{self.path} has inputs/outputs {names}, not the ffd contract ([{INPUT_NAME!r}], "
                f"[{OUTPUT_NAME!r}]). Re-export it with python -m ffd.export ckpt_path=CKPT."
            )

    @property
    def image_size(self) -> int:
        return self.info.image_size

    def __call__(self, images: Any) -> np.ndarray:
        """RGB (N, 3, S, S) uint8 or float 0..255 (numpy array or CPU tensor) -> P(fake) float32 (N,)."""
        batch = np.asarray(images, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"{self.path} takes (N, 3, {self.image_size}, {self.image_size}) RGB batches, got shape "
                f"{batch.shape}: resize with ffd.data.transforms.eval_transform({self.image_size})."
            )
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0].reshape(-1)
