"""Deployable detectors: ONNX export (fp32, fp16, int8), the file's metadata, and onnxruntime inference."""
