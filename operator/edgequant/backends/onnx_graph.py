"""One reader of ONNX graphs for the backends that take or produce ONNX (onnxruntime, pytorch, tensorrt).

``read_graph`` loads a file with the onnx package (imported inside it, no
runtime) and returns the facts the backends decide on: inputs, outputs, nodes
and initializers. Each backend keeps its own checks on top (single input,
opset, ...); the node class and the loading, with its error naming the file
and the fix, are here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.util.errors import InvalidInputError

Dim = int | str | None
"""A tensor dimension: a size, a symbolic name, or unknown."""


@dataclass(frozen=True)
class OnnxNode:
    name: str
    op_type: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class GraphInput:
    name: str
    shape: tuple[Dim, ...]
    elem_type: str
    """numpy name of the element type ("unknown" when the graph does not say)."""


@dataclass(frozen=True)
class OnnxGraph:
    file: str
    """The file's name, as error messages show it."""
    ir_version: int
    opset: int
    """Version of the default ('ai.onnx') domain."""
    inputs: tuple[GraphInput, ...]
    """Graph inputs that are not initializers."""
    outputs: tuple[str, ...]
    nodes: tuple[OnnxNode, ...]
    initializers: frozenset[str]


def _dim(d: Any) -> Dim:
    """One TensorShapeProto.Dimension."""
    if d.HasField("dim_value") and d.dim_value > 0:
        return int(d.dim_value)
    if d.HasField("dim_param") and d.dim_param:
        return str(d.dim_param)
    return None


def read_graph(path: Path, *, fix: str, check: bool = False) -> OnnxGraph:
    """The graph of an ONNX file; a file that is not one (or, with ``check``, not a valid one) is an
    InvalidInputError naming the file and ``fix``."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InvalidInputError(
            f"{path.name} is not an ONNX model ({type(exc).__name__}: {str(exc)[:200]}): {fix}"
        ) from exc
    if check:
        if model.ir_version <= 0 or not model.graph.node:
            raise InvalidInputError(f"{path.name} is not an ONNX model (no IR version or no graph nodes): {fix}")
        try:
            onnx.checker.check_model(str(path))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise InvalidInputError(f"{path.name} is not a valid ONNX model: {first}: {fix}") from exc
    graph = model.graph
    initializers = frozenset(i.name for i in graph.initializer)

    def graph_input(value: Any) -> GraphInput:
        tensor = value.type.tensor_type
        elem = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "unknown"
        return GraphInput(name=value.name, shape=tuple(_dim(d) for d in tensor.shape.dim), elem_type=elem)

    return OnnxGraph(
        file=path.name,
        ir_version=int(model.ir_version),
        opset=int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)),
        inputs=tuple(graph_input(i) for i in graph.input if i.name not in initializers),
        outputs=tuple(o.name for o in graph.output),
        nodes=tuple(
            OnnxNode(name=n.name, op_type=n.op_type, inputs=tuple(n.input), outputs=tuple(n.output)) for n in graph.node
        ),
        initializers=initializers,
    )
