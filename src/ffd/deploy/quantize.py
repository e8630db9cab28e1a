"""Static int8 quantization of an exported detector with onnxruntime.quantization.

QDQ format, int8 weights per output channel, uint8 activations calibrated on real images (the validation split
with the eval transforms). The model is pre-processed first (``quant_pre_process``: shape inference and
onnxruntime's graph optimisations, so that e.g. a BatchNorm that follows a convolution is folded into it
before its ranges are measured).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ffd.deploy.convert import quiet, save_checked
from ffd.deploy.session import INPUT_NAME, ModelInfo

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class ImageBatches:
    """onnxruntime's CalibrationDataReader over uint8 images (N, 3, S, S), in float32 batches.

    It implements ``__len__`` and ``set_range`` so that calibration runs batch by batch
    (``CalibStridedMinMax``): onnxruntime otherwise keeps every intermediate tensor of every image in
    memory until the end (gigabytes for DenseNet121 at 256 px).
    """

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._pending, None)
        return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}


def quantize_int8(
    source: str | Path,
    path: str | Path,
    info: ModelInfo,
    calibration_images: np.ndarray,
    method: str = "minmax",
    batch_size: int = 16,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Quantize the fp32 file ``source`` into ``path``: QDQ, per-channel int8 weights, uint8 activations
    whose ranges come from ``calibration_images`` (uint8 or float RGB, (N, 3, S, S)) by ``method``.

    ``overrides``: other ``quantize_static`` arguments (benchmarks/export.py compares variants with it).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ValueError(f"calibration method {method!r} is not one of: {', '.join(CALIBRATION_METHODS)}.")
    with tempfile.TemporaryDirectory(prefix="ffd-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        quantized = Path(folder) / "quantized.onnx"
        # The histogram calibrators print a line per batch: keep the console for ffd's own output.
        with contextlib.redirect_stdout(io.StringIO()), quiet("onnxruntime.quantization"):
            quant_pre_process(source, prepared)
            settings: dict[str, Any] = {
                "quant_format": QuantFormat.QDQ,
                "per_channel": True,
                # uint8 activations (U8S8): measured on an AVX2 CPU (benchmarks/export.py --variants), int8
                # activations left about half of DenseNet121's convolutions in float32 behind
                # DequantizeLinear (onnxruntime fused only 66 of 120 into QLinearConv) and made the
                # int8 file slower than fp32; uint8 fuses all 120, concatenations included.
                "activation_type": QuantType.QUInt8,
                "weight_type": QuantType.QInt8,
                "calibrate_method": methods[method],
                "extra_options": {
                    "CalibStridedMinMax": 1,
                    # A normalisation's scale and bias are 1-D: their channel axis is 0, not Conv's 1.
                    "QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0, "LayerNormalization": 0},
                },
            }
            overrides = dict(overrides or {})
            settings["extra_options"].update(overrides.pop("extra_options", {}))
            settings.update(overrides)
            quantize_static(prepared, quantized, ImageBatches(calibration_images, batch_size), **settings)
        return save_checked(onnx.load(quantized), path, info)
