"""ONNX Runtime backend: onnx-dynamic and onnx-static (Q/DQ; MinMax, Entropy, Percentile calibration) on ONNX models.

onnxruntime is imported by these modules at their top, so import them only
when the backend is chosen (the registry does). See docs/onnx.md.
"""
