"""What edgequant must know about an ONNX model before quantizing it, and the checks that name the fix.

``read_model`` loads the graph (the onnx package, no runtime); the checks
are pure functions of ``OnnxModel`` and the spec, so every message is tested
without a model file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.backends.onnx_graph import Dim, OnnxNode, read_graph
from edgequant.util.errors import InvalidInputError

#: QuantizeLinear/DequantizeLinear exist from opset 10; their per-channel ``axis`` from opset 13.
MIN_OPSET = 10
MIN_OPSET_PER_CHANNEL = 13
#: Ops whose weights are quantized: the "layers" of an ONNX model for mixed precision and sensitivity.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_HOW_TO_UPGRADE = (
    "re-export it with a newer opset (torch.onnx.export(..., opset_version=17)) or convert it: "
    "onnx.save(onnx.version_converter.convert_version(onnx.load(path), 17), path)"
)


@dataclass(frozen=True)
class OnnxModel:
    """The facts about one model file that the backend decides on."""

    file: str
    """The file's name, as error messages show it."""
    opset: int
    """Version of the default ('ai.onnx') domain."""
    input_name: str
    input_shape: tuple[Dim, ...]
    input_elem_type: str
    """numpy name of the input's element type (float32 for the models edgequant quantizes)."""
    outputs: tuple[str, ...]
    nodes: tuple[OnnxNode, ...]

    @property
    def fixed_batch(self) -> int | None:
        first = self.input_shape[0] if self.input_shape else None
        return first if isinstance(first, int) and first > 0 else None

    def weighted_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if n.op_type in WEIGHTED_OPS and n.name]


def read_model(path: Path, *, field: str = "spec.model.uri") -> OnnxModel:
    """Load and check an ONNX file; anything that is not a valid ONNX model is an InvalidInputError naming it."""
    fix = f"{field} must point to an ONNX model (.onnx, saved by onnx.save or torch.onnx.export)"
    graph = read_graph(path, fix=fix, check=True)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise InvalidInputError(
            f"{path.name} has {len(graph.inputs)} input(s) ({', '.join(i.name for i in graph.inputs)}) and {len(graph.outputs)} output(s): "
            "edgequant quantizes and scores single-input, single-output image classifiers"
        )
    (only,) = graph.inputs
    return OnnxModel(
        file=graph.file,
        opset=graph.opset,
        input_name=only.name,
        input_shape=only.shape,
        input_elem_type=only.elem_type,
        outputs=graph.outputs,
        nodes=graph.nodes,
    )


# --------------------------------------------------------------------------- checks (pure)


def check_opset(model: OnnxModel, *, per_channel: bool) -> None:
    """Refuse opsets ONNX Runtime cannot quantize as asked, instead of letting it convert the model silently."""
    needed = MIN_OPSET_PER_CHANNEL if per_channel else MIN_OPSET
    if model.opset < needed:
        why = (
            "per-channel Q/DQ (spec.onnx.perChannel true) needs QuantizeLinear's axis"
            if per_channel
            else "QuantizeLinear/DequantizeLinear need it"
        )
        raise InvalidInputError(
            f"{model.file} uses opset {model.opset}, older than {needed} ({why}): {_HOW_TO_UPGRADE}"
            + ("; or set spec.onnx.perChannel false (opset >= 10)" if per_channel and model.opset >= MIN_OPSET else "")
        )


def expected_input_shape(contract: api.InputContract) -> tuple[int, int, int]:
    """The model input without its batch dimension, in the contract's layout."""
    h, w, c = contract.height, contract.width, contract.channels
    return (c, h, w) if contract.layout is api.Layout.NCHW else (h, w, c)


def _fits(dims: Sequence[Dim], expected: Sequence[int]) -> bool:
    return len(dims) == len(expected) and all(not isinstance(d, int) or d == e for d, e in zip(dims, expected))


def _show(dims: Iterable[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_input(model: OnnxModel, contract: api.InputContract) -> None:
    """spec.model.input must describe the model's one input: float32, rank 4, same size in the same layout."""
    check_input_shape(
        file=model.file, name=model.input_name, shape=model.input_shape, dtype=model.input_elem_type, contract=contract
    )


def check_input_shape(*, file: str, name: str, shape: Sequence[Dim], dtype: str, contract: api.InputContract) -> None:
    """The check behind ``check_input``, for any framework's model input (``dtype`` 'unknown' is not checked)."""
    if dtype not in ("float32", "unknown"):
        raise InvalidInputError(
            f"{file}: input {name!r} is {dtype}; edgequant quantizes models with a float32 input (export it with one)"
        )
    expected = expected_input_shape(contract)
    sample = tuple(shape[1:])
    if len(shape) == 4 and _fits(sample, expected):
        return
    other = api.Layout.NHWC if contract.layout is api.Layout.NCHW else api.Layout.NCHW
    h, w, c = contract.height, contract.width, contract.channels
    swapped = (c, h, w) if other is api.Layout.NCHW else (h, w, c)
    hint = ""
    if len(shape) == 4 and _fits(sample, swapped):
        hint = f"; the model is {other.value}: set spec.model.input.layout {other.value} and shape {list(swapped)}"
    elif len(shape) == 4 and all(isinstance(d, int) for d in sample):
        hint = f"; set spec.model.input.shape to {list(sample)} in the model's layout"
    raise InvalidInputError(
        f"spec.model.input.shape {list(contract.shape)} ({contract.layout.value}) does not match {file}: "
        f"input {name!r} is {_show(shape)} (batch first), expected [batch, {', '.join(map(str, expected))}]{hint}"
    )


def check_keep_float(
    names: Sequence[str], model: OnnxModel, *, field: str = "spec.mixedPrecision.pinnedLayers"
) -> None:
    """Every name to keep in float must be a node of the (pre-processed) model; list the weighted ones otherwise."""
    known = {n.name for n in model.nodes}
    unknown = [n for n in names if n not in known]
    if unknown:
        layers = model.weighted_nodes()
        shown = ", ".join(layers[:20]) + (f", ... ({len(layers)} in all)" if len(layers) > 20 else "")
        raise InvalidInputError(
            f"{field}: {', '.join(repr(n) for n in unknown)} not a node of {model.file} after pre-processing "
            f"(folded away or misspelt); quantizable nodes: {shown or 'none'}"
        )


def activation_shapes(model: Any) -> dict[str, tuple[Dim, ...]]:
    """Float activations of a shape-inferred ModelProto (inputs and outputs of nodes, not initializers) -> shape,
    in graph order: what calibration and the layer probe expose."""
    from onnx import TensorProto

    graph = model.graph
    infos = {vi.name: vi for vi in (*graph.value_info, *graph.output, *graph.input)}
    initializers = {i.name for i in graph.initializer}
    shapes: dict[str, tuple[Dim, ...]] = {}
    for node in graph.node:
        for name in (*node.input, *node.output):
            info = infos.get(name)
            if name in shapes or name in initializers or info is None or not info.type.HasField("tensor_type"):
                continue
            if info.type.tensor_type.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
                continue
            dims = info.type.tensor_type.shape.dim
            shapes[name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims)
    return shapes


def activation_bytes_per_sample(path: Path) -> int | None:
    """Bytes of all float activations of one sample (inferred shapes); None when a dimension besides the batch is unknown."""
    import onnx

    from edgequant.util.memory import tensor_bytes_per_sample

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    sizes = [tensor_bytes_per_sample(shape, 4) for shape in activation_shapes(model).values()]
    return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
