"""The checks on an ONNX model's facts (pure): opset, input shape and layout, nodes kept in float; artifact names; CNN note."""

from __future__ import annotations

import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.onnxruntime.backend import artifact_name
from edgequant.backends.onnxruntime.model import (
    OnnxModel,
    OnnxNode,
    check_input,
    check_keep_float,
    check_opset,
    expected_input_shape,
)
from edgequant.backends.onnxruntime.quantize import dynamic_cnn_note
from edgequant.util.errors import InvalidInputError

NCHW_GRAY = api.InputContract(shape=[1, 28, 28], layout=api.Layout.NCHW, color_order=api.ColorOrder.GRAY)
NHWC_RGB = api.InputContract(shape=[96, 96, 3], layout=api.Layout.NHWC, color_order=api.ColorOrder.RGB)


def _model(
    shape: tuple[int | str | None, ...] = ("batch", 1, 28, 28),
    *,
    opset: int = 17,
    dtype: str = "float32",
    ops: tuple[str, ...] = ("Conv", "Relu", "Conv", "Gemm"),
) -> OnnxModel:
    return OnnxModel(
        file="cnn.onnx",
        opset=opset,
        input_name="input",
        input_shape=shape,
        input_elem_type=dtype,
        outputs=("logits",),
        nodes=tuple(OnnxNode(name=f"node_{op}_{i}", op_type=op) for i, op in enumerate(ops)),
    )


def test_expected_shape_follows_the_layout() -> None:
    assert expected_input_shape(NCHW_GRAY) == (1, 28, 28)
    assert expected_input_shape(NHWC_RGB) == (96, 96, 3)


def test_matching_inputs_pass_including_symbolic_dims() -> None:
    check_input(_model(), NCHW_GRAY)
    check_input(_model((1, 1, 28, 28)), NCHW_GRAY)
    check_input(_model(("N", 3, "H", "W")), api.InputContract(shape=[3, 64, 64], layout=api.Layout.NCHW))
    check_input(_model((None, 96, 96, 3)), NHWC_RGB)


def test_layout_mismatch_says_which_layout() -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_input(_model(("batch", 3, 96, 96)), NHWC_RGB)
    assert str(caught.value) == (
        "spec.model.input.shape [96, 96, 3] (NHWC) does not match cnn.onnx: input 'input' is [batch, 3, 96, 96] (batch first), "
        "expected [batch, 96, 96, 3]; the model is NCHW: set spec.model.input.layout NCHW and shape [3, 96, 96]"
    )


def test_size_mismatch_gives_the_model_shape() -> None:
    with pytest.raises(InvalidInputError, match=r"set spec.model.input.shape to \[3, 224, 224\] in the model's layout"):
        check_input(_model(("batch", 3, 224, 224)), NHWC_RGB)
    with pytest.raises(InvalidInputError, match=r"input 'input' is \[batch, 784\] \(batch first\)"):
        check_input(_model(("batch", 784)), NCHW_GRAY)


def test_non_float_input_is_refused() -> None:
    with pytest.raises(
        InvalidInputError, match="input 'input' is uint8; edgequant quantizes models with a float32 input"
    ):
        check_input(_model(dtype="uint8"), NCHW_GRAY)


@pytest.mark.parametrize(
    ("opset", "per_channel", "words"),
    [
        (9, True, "older than 13"),
        (11, True, "set spec.onnx.perChannel false (opset >= 10)"),
        (9, False, "older than 10 (QuantizeLinear/DequantizeLinear need it)"),
    ],
)
def test_old_opsets_are_refused_with_the_fix(opset: int, per_channel: bool, words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_opset(_model(opset=opset), per_channel=per_channel)
    message = str(caught.value)
    assert message.startswith(f"cnn.onnx uses opset {opset}") and words in message
    assert "onnx.version_converter.convert_version" in message


def test_new_enough_opsets_pass() -> None:
    check_opset(_model(opset=13), per_channel=True)
    check_opset(_model(opset=10), per_channel=False)


def test_keep_float_names_must_be_nodes() -> None:
    model = _model()
    check_keep_float(["node_Conv_0", "node_Relu_1"], model)
    with pytest.raises(InvalidInputError) as caught:
        check_keep_float(["node_Conv_0", "conv1"], model)
    assert str(caught.value) == (
        "spec.mixedPrecision.pinnedLayers: 'conv1' not a node of cnn.onnx after pre-processing (folded away or misspelt); "
        "quantizable nodes: node_Conv_0, node_Conv_2, node_Gemm_3"
    )


def test_fixed_batch() -> None:
    assert _model((1, 1, 28, 28)).fixed_batch == 1
    assert _model().fixed_batch is None and _model((None, 1, 28, 28)).fixed_batch is None


def test_artifact_names_differ_per_set_of_float_nodes() -> None:
    assert artifact_name("cnn", api.Method.ONNX_STATIC, ()) == "cnn.qdq-int8.onnx"
    assert artifact_name("cnn", api.Method.ONNX_DYNAMIC, ()) == "cnn.dynamic-int8.onnx"
    one = artifact_name("cnn", api.Method.ONNX_STATIC, ("a",))
    assert one.startswith("cnn.qdq-int8-float1-") and one.endswith(".onnx")
    assert artifact_name("cnn", api.Method.ONNX_STATIC, ("a", "b")) == artifact_name(
        "cnn", api.Method.ONNX_STATIC, ("b", "a")
    )
    assert artifact_name("cnn", api.Method.ONNX_STATIC, ("a", "c")) != artifact_name(
        "cnn", api.Method.ONNX_STATIC, ("a", "b")
    )


def test_dynamic_on_convolutions_is_noted() -> None:
    note = dynamic_cnn_note(_model())
    assert note is not None and "2 of 3 weighted ops are Conv" in note and "ConvInteger" in note
    assert dynamic_cnn_note(_model(ops=("MatMul", "Add", "MatMul", "Gemm"))) is None
