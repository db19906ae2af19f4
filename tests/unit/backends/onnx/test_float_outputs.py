"""spec.ptq.floatOutputs' graph edit (backends/onnxruntime/quantize.with_float_outputs) on a Q/DQ graph built with
onnx.helper the way quantize_static writes one, run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgequant.backends.onnxruntime.quantize import with_float_outputs  # noqa: E402

LOGIT_SCALE, LOGIT_ZERO = 0.25, 128


def _qdq_classifier(*, also_read: bool = False) -> onnx.ModelProto:
    """x -> Q/DQ -> Gemm -> Q/DQ -> ``logits``; ``hidden`` = Relu(x), a float output of its own. ``also_read``: the
    logits' QuantizeLinear also feeds another node (then the pair is not only the output's)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "x_zero_point"),
        numpy_helper.from_array(np.array(LOGIT_SCALE, np.float32), "logits_scale"),
        numpy_helper.from_array(np.array(LOGIT_ZERO, np.uint8), "logits_zero_point"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["x_q"], name="x_Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero_point"], ["x_dq"], name="x_DQ"),
        helper.make_node("Gemm", ["x_dq", "w"], ["logits_QuantizeLinear_Input"], name="fc"),
        helper.make_node(
            "QuantizeLinear",
            ["logits_QuantizeLinear_Input", "logits_scale", "logits_zero_point"],
            ["logits_QuantizeLinear_Output"],
            name="logits_QuantizeLinear",
        ),
        helper.make_node(
            "DequantizeLinear",
            ["logits_QuantizeLinear_Output", "logits_scale", "logits_zero_point"],
            ["logits"],
            name="logits_DequantizeLinear",
        ),
        helper.make_node("Relu", ["x"], ["hidden"], name="relu"),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 6]),
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [None, 4]),
    ]
    if also_read:
        nodes.append(helper.make_node("Identity", ["logits_QuantizeLinear_Output"], ["codes"], name="codes"))
        outputs.append(helper.make_tensor_value_info("codes", TensorProto.UINT8, [None, 6]))
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, {"x": x})]


def test_the_output_pair_goes_and_the_last_layer_writes_its_float_result() -> None:
    model = _qdq_classifier()
    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    logits_8bit, hidden = _run(model, x)
    assert with_float_outputs(model) == ["logits"]
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1  # the input's pair stays
    names = {t.name for t in model.graph.initializer}
    assert "logits_scale" not in names and "logits_zero_point" not in names and "x_scale" in names
    logits_float, hidden_after = _run(model, x)
    np.testing.assert_array_equal(hidden_after, hidden)
    # the float logits, put through the dropped pair, are what the graph gave before (ONNX Runtime fuses the 8-bit
    # graph's DQ -> Gemm -> Q into one integer kernel, whose requantization may round a value the other way)
    codes = np.clip(np.rint(logits_float / LOGIT_SCALE) + LOGIT_ZERO, 0, 255)
    assert np.abs((codes - LOGIT_ZERO) * LOGIT_SCALE - logits_8bit).max() <= LOGIT_SCALE
    assert np.abs(logits_float - logits_8bit).max() <= LOGIT_SCALE
    assert not np.array_equal(logits_float, logits_8bit)  # and they are finer than 256 levels
    assert len(np.unique(logits_float)) > len(np.unique(logits_8bit))


def test_an_output_pair_that_feeds_anything_else_stays() -> None:
    model = _qdq_classifier(also_read=True)
    before = model.SerializeToString()
    assert with_float_outputs(model) == []
    assert model.SerializeToString() == before
