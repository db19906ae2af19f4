"""ONNX nodes -> layers: activations fold into the node that feeds them, shape ops are no layer (no onnx needed)."""

from __future__ import annotations

import numpy as np

from edgequant.analysis.layer_tools import rebatch
from edgequant.backends.onnx_graph import OnnxNode
from edgequant.backends.onnxruntime.sensitivity import group_layers


def n(name: str, op: str, ins: tuple[str, ...], out: str) -> OnnxNode:
    return OnnxNode(name=name, op_type=op, inputs=ins, outputs=(out,))


def test_torch_style_graph_groups_relu_with_its_conv() -> None:
    nodes = [
        n("/conv1/Conv", "Conv", ("input", "w1", "b1"), "c1"),
        n("/Relu", "Relu", ("c1",), "r1"),
        n("/pool1/MaxPool", "MaxPool", ("r1",), "p1"),
        n("/Flatten", "Flatten", ("p1",), "f"),
        n("/fc/Gemm", "Gemm", ("f", "w2", "b2"), "g"),
        n("/Clip", "Clip", ("g", "lo", "hi"), "out"),
    ]
    layers = group_layers(nodes, initializers={"w1", "b1", "w2", "b2", "lo", "hi"})
    assert layers == {
        "/conv1/Conv": "/conv1/Conv",
        "/Relu": "/conv1/Conv",
        "/pool1/MaxPool": "/pool1/MaxPool",
        "/Flatten": None,
        "/fc/Gemm": "/fc/Gemm",
        "/Clip": "/fc/Gemm",
    }


def test_an_activation_after_a_branch_or_an_add_stays_its_own_layer() -> None:
    nodes = [
        n("conv", "Conv", ("x", "w"), "c"),
        n("relu_a", "Relu", ("c",), "a"),  # c has two consumers: not folded
        n("relu_b", "Relu", ("c",), "b"),
        n("add", "Add", ("a", "b"), "s"),
        n("relu_s", "Relu", ("s",), "out"),
    ]
    layers = group_layers(nodes, initializers={"w"})
    assert layers["relu_a"] == "relu_a" and layers["relu_b"] == "relu_b"
    assert layers["relu_s"] == "add"


def test_rebatch_regroups_and_stops_at_the_limit() -> None:
    batches = [np.zeros((5, 2), np.float64), np.ones((5, 2), np.float64), np.ones((5, 2))]
    out = list(rebatch(batches, 4, 9))
    assert [len(b) for b in out] == [4, 4, 1] and all(b.dtype == np.float32 for b in out)


def test_float_tensors_pair_with_their_dequantized_counterparts() -> None:
    from edgequant.backends.onnxruntime.sensitivity import match_tensors

    qdq = [
        "input",
        "input_QuantizeLinear_Output",
        "input_DequantizeLinear_Output",  # quantized in place
        "c1",
        "c1_DequantizeLinear_Output_1",  # a second Q/DQ pair of the same tensor
        "logits_QuantizeLinear_Input",
        "logits",  # a graph output: renamed before its Q/DQ pair
        "r1",  # left in float: nothing to compare
    ]
    pairs = match_tensors(float_tensors=["input", "c1", "r1", "logits", "gone"], qdq_tensors=qdq)
    assert pairs == {"input": "input_DequantizeLinear_Output", "c1": "c1_DequantizeLinear_Output_1", "logits": "logits"}
