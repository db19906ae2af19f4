"""Will a full-integer TFLite model map onto the Edge TPU? Its ops against the documented supported operations.

The Edge TPU compiler is not available here, so this reads the model's op list and checks what Coral's
documentation states (docs/targets.md, "Edge TPU"): the supported operations, 8-bit tensors only (int32
biases and shapes aside), static tensor sizes. The compiler maps ops in graph order and cuts the graph once:
the first op it cannot map and every op after it run on the host CPU. ``check_ops`` is pure; ``read_ops``
reads a .tflite file with the LiteRT interpreter (imported only there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgequant.report.schema import Finding

SOURCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"

#: TFLite builtin op names the Edge TPU compiler maps (Coral's supported-operations table, compiler version 16).
EDGETPU_OPS: frozenset[str] = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "SQUARED_DIFFERENCE",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)
#: Tensor types an Edge TPU op may read or write: 8-bit data, int32 biases and shape operands.
INTEGER_TYPES = frozenset({"int8", "uint8", "int32"})


@dataclass(frozen=True)
class GraphOp:
    index: int
    name: str
    """TFLite builtin name, e.g. CONV_2D."""
    types: tuple[str, ...] = ()
    """Types of its operands and results."""


@dataclass(frozen=True)
class GraphTensor:
    name: str
    shape_signature: tuple[int, ...]
    """-1 marks a dynamic dimension."""


@dataclass(frozen=True)
class Graph:
    ops: tuple[GraphOp, ...]
    io: tuple[GraphTensor, ...] = field(default=())
    """Model inputs and outputs."""


def check_ops(graph: Graph) -> list[Finding]:
    """Every Edge TPU rule the graph breaks (quiet findings for the rules it meets), each with its fix."""
    findings: list[Finding] = []
    unsupported = [op for op in graph.ops if op.name not in EDGETPU_OPS]
    non_integer = [op for op in graph.ops if op.name in EDGETPU_OPS and not set(op.types) <= INTEGER_TYPES]
    first = min((op.index for op in [*unsupported, *non_integer]), default=None)
    after = sum(1 for op in graph.ops if first is not None and op.index >= first)
    names = list(dict.fromkeys(op.name for op in unsupported))  # graph order
    findings.append(
        Finding(
            check="edgetpu-unsupported-op",
            fired=bool(unsupported),
            message=(
                f"{len(unsupported)} op(s) the Edge TPU does not run ({', '.join(names)}; first at op {unsupported[0].index}): "
                f"the compiler cuts the graph at the first op it cannot map, so {after} of {len(graph.ops)} ops would run on "
                f"the host CPU (source: {SOURCE})"
                if unsupported
                else f"all {len(graph.ops)} ops are in the Edge TPU's supported operations (source: {SOURCE})"
            ),
            evidence={"ops": float(len(graph.ops)), "unsupported": float(len(unsupported)), "cpu_ops": float(after)},
            fixes=[
                f"replace {', '.join(names) or 'the op'} in the model with supported ops (e.g. ReLU/ReLU6 for other "
                "activations, Conv2D/DepthwiseConv2D/FullyConnected for custom layers) and retrain or fine-tune",
                "or move the unsupported ops to the end of the graph (post-processing), so only they run on the CPU",
            ]
            if unsupported
            else [],
        )
    )
    findings.append(
        Finding(
            check="edgetpu-float-tensor",
            fired=bool(non_integer),
            message=(
                f"{len(non_integer)} op(s) read or write non-8-bit tensors "
                f"({', '.join(f'{op.name}#{op.index}: {sorted(set(op.types) - INTEGER_TYPES)}' for op in non_integer[:5])}): the "
                "Edge TPU runs 8-bit tensors only, so they would run on the CPU"
                if non_integer
                else "every mapped op uses 8-bit tensors (int32 biases and shapes aside)"
            ),
            evidence={"non_integer_ops": float(len(non_integer))},
            fixes=[
                "quantize the whole model to 8 bits (tflite-int8 with full-integer ops; no mixedPrecision pins for this target)"
            ]
            if non_integer
            else [],
        )
    )
    dynamic = [t for t in graph.io if any(d < 0 for d in t.shape_signature)]
    findings.append(
        Finding(
            check="edgetpu-dynamic-shape",
            fired=bool(dynamic),
            message=(
                f"dynamic tensor sizes in {', '.join(f'{t.name} {list(t.shape_signature)}' for t in dynamic)}: the Edge TPU "
                "needs sizes fixed at compile time (the runtime refuses a graph with dynamic-sized tensors)"
                if dynamic
                else "input and output sizes are static"
            ),
            evidence={"dynamic_tensors": float(len(dynamic))},
            fixes=[
                "export the model with a fixed batch size of 1 (e.g. keras.Input(shape, batch_size=1) or a tf.function "
                "input_signature with batch 1) and quantize again"
            ]
            if dynamic
            else [],
        )
    )
    return findings


def read_ops(path: Path) -> Graph:
    """The op list and I/O tensors of a .tflite model (LiteRT interpreter; no delegate runs)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    ops = tuple(
        GraphOp(
            index=int(op["index"]),
            name=str(op["op_name"]),
            types=tuple(
                t.__name__ if isinstance(t, type) else str(t)
                for t in [*op.get("operand_types", []), *op.get("result_types", [])]
            ),
        )
        for op in interpreter._get_ops_details()  # the listing TFLite's QuantizationDebugger uses too
    )
    io = tuple(
        GraphTensor(name=str(d["name"]), shape_signature=tuple(int(x) for x in d.get("shape_signature", d["shape"])))
        for d in [*interpreter.get_input_details(), *interpreter.get_output_details()]
    )
    return Graph(ops=ops, io=io)
