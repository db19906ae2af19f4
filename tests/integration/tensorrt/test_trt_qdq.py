"""The Q/DQ ONNX behind explicit quantization (TensorRT >= 10): symmetric INT8, zero points 0, pinned nodes left float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.tensorrt.ort_calibration import quantize_qdq_for_tensorrt

pytestmark = pytest.mark.integration


def _accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return float((logits.argmax(axis=1) == y).mean())


def test_qdq_model_follows_tensorrts_explicit_quantization_rules(
    fashion_cnn_onnx: Path, fashion_batches, fashion_mnist, tmp_path: Path
) -> None:
    import onnx
    from onnx import numpy_helper

    out = quantize_qdq_for_tensorrt(
        model_path=fashion_cnn_onnx,
        output_path=tmp_path / "model.qdq.onnx",
        batches=fashion_batches(256),
        input_name="input",
        batch_size=32,
        sample_shape=(1, 28, 28),
        algorithm=api.CalibrationAlgorithm.MINMAX,
        percentile=99.999,
        nodes_to_exclude=["/fc2/Gemm"],
    )
    model = onnx.load(str(out))
    nodes = {n.name: n for n in model.graph.node}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes were inserted"
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), f"{node.name}: TensorRT needs int8 zero point 0"
    # Weighted ops read dequantized inputs and weights; the pinned Gemm keeps float weights and bias
    # (its input may still pass the Q/DQ pair that ONNX Runtime puts on the quantized producer's output).
    for name in ("/conv1/Conv", "/conv2/Conv", "/fc1/Gemm"):
        assert all(producers[i].op_type == "DequantizeLinear" for i in nodes[name].input[:2]), name
    pinned = nodes["/fc2/Gemm"]
    assert all(i in inits and inits[i].dtype == np.float32 for i in pinned.input[1:])
    # Biases stay float everywhere: TensorRT's Q/DQ takes no int32 bias.
    assert all(inits[nodes[n].input[2]].dtype == np.float32 for n in ("/conv1/Conv", "/conv2/Conv", "/fc1/Gemm"))
    # Per-channel weight scales on the output-channel axis for the convolutions.
    conv_weight_dq = producers[nodes["/conv2/Conv"].input[1]]
    assert inits[conv_weight_dq.input[1]].shape == (16,)
    # Still the same classifier.
    x = (fashion_mnist.test_x[:1000, None] / np.float32(255)).astype(np.float32)
    y = fashion_mnist.test_y[:1000]
    fp32, int8 = _accuracy(fashion_cnn_onnx, x, y), _accuracy(out, x, y)
    assert fp32 > 0.75 and abs(fp32 - int8) < 0.02, (fp32, int8)
