"""ONNX node names (sensitivity rankings, pinnedLayers) -> TensorRT layer names, and which layers get pinned.

The layer list follows onnx-tensorrt's naming (ImporterContext::registerLayer):
the first layer of a node carries the node's name, further layers
``<node>_<n>``, and the node's ONNX outputs keep their names.
"""

from __future__ import annotations

import pytest

from edgequant.backends.onnx_graph import OnnxNode
from edgequant.backends.tensorrt.names import (
    TrtLayer,
    layers_of_nodes,
    pin_decisions,
    resolve_pins,
)
from edgequant.util.errors import InvalidInputError

NODES = [
    OnnxNode("/conv1/Conv", "Conv", outputs=("/conv1/Conv_output_0",)),
    OnnxNode("/relu1/Relu", "Relu", outputs=("/relu1/Relu_output_0",)),
    OnnxNode("/pool1/MaxPool", "MaxPool", outputs=("/pool1/MaxPool_output_0",)),
    OnnxNode("/conv2/Conv", "Conv", outputs=("/conv2/Conv_output_0",)),
    OnnxNode("", "Relu", outputs=("relu2_out",)),  # an unnamed node: only its output ties it to a layer
    OnnxNode("/Constant", "Constant", outputs=("/Constant_output_0",)),  # folded by the parser: no layer
    OnnxNode("/Reshape", "Reshape", outputs=("/Reshape_output_0",)),
    OnnxNode("/fc/Gemm", "Gemm", outputs=("logits",)),
    OnnxNode("/fc/Gemm_2", "Gemm", outputs=("logits2",)),  # a node whose name looks like another node's extra layer
]


def _layer(name: str, kind: str, out: str, dtype: str = "FLOAT") -> TrtLayer:
    return TrtLayer(name=name, type=kind, outputs=(out,), output_dtypes=(dtype,))


LAYERS = [
    _layer("/conv1/Conv", "CONVOLUTION", "/conv1/Conv_output_0"),
    _layer("/relu1/Relu", "ACTIVATION", "/relu1/Relu_output_0"),
    _layer("/pool1/MaxPool", "POOLING", "/pool1/MaxPool_output_0"),
    _layer("/conv2/Conv", "CONVOLUTION", "/conv2/Conv_output_0"),
    _layer("(Unnamed Layer* 4) [Activation]", "ACTIVATION", "relu2_out"),
    _layer("/Reshape", "SHAPE", "(Unnamed Layer* 5) [Shape]_output", "INT64"),
    _layer("/Reshape_7", "SHUFFLE", "/Reshape_output_0"),
    _layer("fc.weight", "CONSTANT", "fc.weight"),
    _layer("/fc/Gemm", "MATRIX_MULTIPLY", "/fc/Gemm_output_tmp"),
    _layer("/fc/Gemm_9", "ELEMENTWISE", "logits"),
    _layer("/fc/Gemm_2", "MATRIX_MULTIPLY", "logits2"),
]


def test_each_node_owns_its_named_suffixed_and_output_layers() -> None:
    owned = layers_of_nodes(NODES, LAYERS)
    assert owned["/conv1/Conv"] == ("/conv1/Conv",)
    assert owned["/Reshape"] == ("/Reshape", "/Reshape_7")
    assert owned["/fc/Gemm"] == ("/fc/Gemm", "/fc/Gemm_9")
    assert owned["/fc/Gemm_2"] == ("/fc/Gemm_2",)  # an exact node name is never read as another node's suffix
    assert owned["/Constant"] == ()
    assert "" not in owned


def test_pins_resolve_node_names_and_tensorrt_layer_names() -> None:
    resolution = resolve_pins(
        ["/fc/Gemm", "(Unnamed Layer* 4) [Activation]", "/Constant"], nodes=NODES, layers=LAYERS, field_name="pins"
    )
    assert resolution.layers == {
        "/fc/Gemm": ("/fc/Gemm", "/fc/Gemm_9"),
        "(Unnamed Layer* 4) [Activation]": ("(Unnamed Layer* 4) [Activation]",),
    }
    assert resolution.unmapped == ["/Constant"]


def test_unknown_names_are_an_error_with_suggestions_and_the_quantizable_nodes() -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_pins(["/fc/gemm", "conv9"], nodes=NODES, layers=LAYERS, field_name="spec.mixedPrecision.pinnedLayers")
    message = str(info.value)
    assert message.startswith("spec.mixedPrecision.pinnedLayers: '/fc/gemm' (did you mean '/fc/Gemm'")
    assert "'conv9'" in message
    assert "quantizable nodes are: /conv1/Conv, /conv2/Conv, /fc/Gemm, /fc/Gemm_2" in message


def test_pin_decisions_set_float_outputs_and_skip_constants_and_shape_math() -> None:
    by_name = {layer.name: layer for layer in LAYERS}
    two_outputs = TrtLayer(name="split", type="SLICE", outputs=("a", "b"), output_dtypes=("FLOAT", "INT32"))
    by_name["split"] = two_outputs
    plan = pin_decisions(
        ["/fc/Gemm", "fc.weight", "/fc/Gemm_9", "/Reshape", "split", "/fc/Gemm"], layers=by_name, precision="HALF"
    )
    assert [(d.layer, d.precision, d.outputs) for d in plan.decisions] == [
        ("/fc/Gemm", "HALF", (0,)),
        ("/fc/Gemm_9", "HALF", (0,)),
        ("split", "HALF", (0,)),
    ]
    assert plan.skipped == {"fc.weight": "constant layer", "/Reshape": "shape layer"}


def test_integer_only_layers_are_not_pinned() -> None:
    layer = TrtLayer(name="/ArgMax", type="TOPK", outputs=("idx",), output_dtypes=("INT32",))
    plan = pin_decisions(["/ArgMax"], layers={"/ArgMax": layer}, precision="HALF")
    assert plan.decisions == [] and "not floating point" in plan.skipped["/ArgMax"]
