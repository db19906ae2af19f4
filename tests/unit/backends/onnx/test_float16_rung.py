"""The degrade ladder's float16 rung for ONNX models: float16 inside, float32 at the edges, a graph the checker accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.backends.onnxruntime.quantize import _sort_topologically, convert_to_float16


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 256)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (256, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_float16_conversion_keeps_float32_io_and_the_outputs(tmp_path: Path) -> None:
    import onnxruntime as ort

    source = _mlp(tmp_path / "mlp.onnx")
    out = convert_to_float16(source, tmp_path / "mlp.float16.onnx")
    onnx.checker.check_model(str(out))  # topologically sorted despite the converter's appended Casts
    model = onnx.load(str(out))
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert out.stat().st_size < source.stat().st_size * 0.75
    x = np.random.default_rng(1).normal(0, 1, (5, 8)).astype(np.float32)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-2)


def test_sorting_puts_each_node_after_its_producers() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["b"], ["c"], name="second"), helper.make_node("Relu", ["a"], ["b"], name="first")],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])],
    )
    _sort_topologically(graph)
    assert [n.name for n in graph.node] == ["first", "second"]
