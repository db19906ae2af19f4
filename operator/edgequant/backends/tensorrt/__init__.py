"""TensorRT backend: FP16, INT8 (implicit calibrator or explicit Q/DQ) and mixed INT8/FP16 engines from ONNX.

TensorRT and pycuda exist only in the quantizer-tensorrt image on a GPU node;
they are imported inside the functions that use them. Everything that decides
what to build (version path, flags, pins, calibration batches, cache names and
format) is plain Python, tested on the CPU. See docs/tensorrt.md.
"""
