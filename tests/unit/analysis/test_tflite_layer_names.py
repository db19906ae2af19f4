"""TFLite ops -> source layer names, on op listings shaped like what TF 2.21 writes for Keras 3 models (no TensorFlow here)."""

from __future__ import annotations

import pytest

from edgequant.backends.tflite.layers import LayerMap, RawOp, assign_layers


def op(
    i: int, kind: str, out: str, *, ins: tuple[str, ...] = (), consts: tuple[str, ...] = (), last: bool = False
) -> RawOp:
    return RawOp(index=i, kind=kind, inputs=ins, constants=consts, output=out, is_model_output=last)


# A functional Keras 3 model: conv2d -> BN -> ReLU, conv2d_1 (relu), add, GAP, dense, dense_1, softmax.
# Keras 3 traces layer `conv2d` under scope `conv2d_1` and layer `conv2d_1` under `conv2d_1_2`.
FUNCTIONAL = [
    op(
        0,
        "CONV_2D",
        "functional_1/re_lu_1/Relu;functional_1/conv2d_1/convolution",
        ins=("serving_default_keras_tensor:0",),
        consts=("functional_1/conv2d_1/convolution", "arith.constant"),
    ),
    op(
        1,
        "CONV_2D",
        "functional_1/conv2d_1_2/Relu;functional_1/conv2d_1_2/convolution",
        ins=("functional_1/re_lu_1/Relu;functional_1/conv2d_1/convolution",),
        consts=("functional_1/conv2d_1_2/convolution", "arith.constant1"),
    ),
    op(2, "ADD", "functional_1/add_1/Add", ins=("a", "b")),
    op(
        3,
        "MEAN",
        "functional_1/global_average_pooling2d_1/Mean",
        ins=("functional_1/add_1/Add",),
        consts=("functional_1/global_average_pooling2d_1/Mean/reduction_indices",),
    ),
    op(4, "FULLY_CONNECTED", "functional_1/dense_1/MatMul1", consts=("functional_1/dense_1/MatMul",)),
    op(5, "FULLY_CONNECTED", "functional_1/dense_1_2/MatMul1", consts=("functional_1/dense_1_2/MatMul",)),
    op(6, "SOFTMAX", "StatefulPartitionedCall_1:0", ins=("functional_1/dense_1_2/MatMul1",), last=True),
]
FUNCTIONAL_NAMES = [
    "conv2d",
    "batch_normalization",
    "re_lu",
    "conv2d_1",
    "add",
    "global_average_pooling2d",
    "dense",
    "dense_1",
    "softmax",
]


def test_keras3_scope_suffixes_resolve_to_the_right_layers() -> None:
    lm = assign_layers(FUNCTIONAL, layer_names=FUNCTIONAL_NAMES, output_layer="softmax")
    assert [lop.layer for lop in lm.ops] == [
        "conv2d",
        "conv2d_1",
        "add",
        "global_average_pooling2d",
        "dense",
        "dense_1",
        "softmax",
    ]
    # fused BN and ReLU own no op of their own, so they are not quantizable layers
    assert lm.layers == ["conv2d", "conv2d_1", "add", "global_average_pooling2d", "dense", "dense_1", "softmax"]


def test_names_without_keras3_suffixes_match_exactly() -> None:
    ops = [
        op(0, "CONV_2D", "model/conv2d/Relu", consts=("model/conv2d/Conv2D",)),
        op(1, "CONV_2D", "model/conv2d_1/Relu", consts=("model/conv2d_1/Conv2D",)),
    ]
    assert [lop.layer for lop in assign_layers(ops, layer_names=["conv2d", "conv2d_1"]).ops] == ["conv2d", "conv2d_1"]


SEQUENTIAL = [
    op(
        0,
        "CONV_2D",
        "sequential_1/conv1_1/Relu;sequential_1/conv1_1/BiasAdd;sequential_1/conv1_1/convolution;sequential_1/conv1_1/Squeeze1",
        consts=("sequential_1/conv1_1/convolution",),
    ),
    op(1, "MAX_POOL_2D", "sequential_1/pool1_1/MaxPool2d"),
    op(2, "SHAPE", "sequential_1/flat_1/Shape"),
    op(
        3,
        "STRIDED_SLICE",
        "sequential_1/flat_1/strided_slice",
        consts=("sequential_1/flat_1/strided_slice/stack", "arith.constant"),
    ),
    op(4, "RESHAPE", "sequential_1/flat_1/Reshape"),
    op(
        5,
        "FULLY_CONNECTED",
        "StatefulPartitionedCall_1:0",
        consts=("sequential_1/logits_1/MatMul", "sequential_1/logits_1/BiasAdd"),
        last=True,
    ),
]


def test_weights_name_the_output_layer_and_shape_ops_are_not_layers() -> None:
    lm = assign_layers(SEQUENTIAL, layer_names=["conv1", "pool1", "flat", "logits"], output_layer="logits")
    assert lm.layers == ["conv1", "pool1", "logits"]
    assert lm.ops[2].layer == "flat" and "flat" not in lm.layers


def test_denylists_for_isolation_and_pinning() -> None:
    lm = assign_layers(SEQUENTIAL, layer_names=["conv1", "pool1", "flat", "logits"], output_layer="logits")
    assert lm.nodes_of(["logits"]) == ["StatefulPartitionedCall_1:0"]
    only_pool = lm.nodes_except("pool1")
    assert "sequential_1/pool1_1/MaxPool2d" not in only_pool and len(only_pool) == len(SEQUENTIAL) - 1
    with pytest.raises(
        KeyError,
        match=r"pinnedLayers must name layers of the source model; quantizable layers are \['conv1', 'pool1', 'logits'\]",
    ):
        lm.nodes_of(["conv9"])


def test_savedmodel_sources_use_the_scope_as_the_name() -> None:
    lm = assign_layers(SEQUENTIAL, layer_names=None)
    assert lm.layers == ["conv1_1", "pool1_1", "logits_1"]


def test_unnamed_output_op_falls_back_to_its_tensor_name_without_an_output_layer() -> None:
    ops = [op(0, "SOFTMAX", "StatefulPartitionedCall_1:0", last=True)]
    assert assign_layers(ops, layer_names=["x"]).layers == ["StatefulPartitionedCall_1:0"]
    assert isinstance(assign_layers(ops, layer_names=["x"], output_layer="probs"), LayerMap)
    assert assign_layers(ops, layer_names=["x"], output_layer="probs").layers == ["probs"]


def test_debug_model_ops_align_with_the_calibrated_ops_by_kind_and_order() -> None:
    from edgequant.backends.tflite.sensitivity import align_by_kind

    lm = assign_layers(SEQUENTIAL, layer_names=["conv1", "pool1", "flat", "logits"], output_layer="logits")
    reference = [(lop.op.kind, lop.layer) for lop in lm.ops]
    # a debug model verifies the quantized ops only, renamed; kinds and order survive
    probed = ["CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert align_by_kind(reference=reference, probed=probed) == ["conv1", "pool1", "flat", "logits", None]
