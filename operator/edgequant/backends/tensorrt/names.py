"""ONNX node names (what sensitivity analysis and users name) -> TensorRT layer names, and what to pin. Pure.

TensorRT's ONNX parser names the first layer it creates for a node after the
node and further layers of the same node ``<node>_<n>``; the node's ONNX
output tensors keep their names as the outputs of its last layer
(onnx-tensorrt ImporterContext::registerLayer / registerTensor). A layer
belongs to a node when its name is the node's, when it is ``<node>_<n>`` and
not itself another node's name, or when it writes one of the node's outputs.
Users may also name TensorRT layers directly (as trtexec prints them).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgequant.backends.onnx_graph import OnnxNode
from edgequant.util.errors import InvalidInputError


@dataclass(frozen=True)
class TrtLayer:
    name: str
    type: str
    """trt.LayerType member name, e.g. CONVOLUTION, SHUFFLE, CONSTANT."""
    outputs: tuple[str, ...]
    output_dtypes: tuple[str, ...]
    """trt.DataType member names of the outputs, e.g. FLOAT, HALF, INT32."""


#: Layer types whose precision is meaningless or not settable: data movement of shapes and weights.
NOT_PINNABLE_TYPES = frozenset({"CONSTANT", "SHAPE", "ASSERTION", "QUANTIZE", "DEQUANTIZE"})
FLOAT_TYPES = frozenset({"FLOAT", "HALF"})

#: ONNX ops that carry weights and are worth quantizing / pinning (LayerIntrospection lists these).
QUANTIZABLE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def layers_of_nodes(nodes: Sequence[OnnxNode], layers: Sequence[TrtLayer]) -> dict[str, tuple[str, ...]]:
    """ONNX node name -> names of the TensorRT layers that implement it (in network order; may be empty)."""
    node_names = {n.name for n in nodes if n.name}
    producer_of = {out: n.name for n in nodes for out in n.outputs if n.name}
    owned: dict[str, list[str]] = {n.name: [] for n in nodes if n.name}
    suffix = re.compile(r"^(.*)_(\d+)$")
    for layer in layers:
        owners: list[str] = []
        if layer.name in node_names:
            owners.append(layer.name)
        else:
            match = suffix.match(layer.name)
            if match and match.group(1) in node_names:
                owners.append(match.group(1))
        for out in layer.outputs:
            owner = producer_of.get(out)
            if owner is not None and owner not in owners:
                owners.append(owner)
        for owner in owners:
            owned[owner].append(layer.name)
    return {name: tuple(found) for name, found in owned.items()}


@dataclass
class PinResolution:
    layers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Wanted name -> TensorRT layers it resolved to."""
    unmapped: list[str] = field(default_factory=list)
    """ONNX nodes that produced no TensorRT layer (folded away by the parser, e.g. Constant or Identity)."""


def resolve_pins(
    wanted: Sequence[str], *, nodes: Sequence[OnnxNode], layers: Sequence[TrtLayer], field_name: str
) -> PinResolution:
    """Map each wanted name (ONNX node or TensorRT layer) to layers; unknown names are an error with suggestions."""
    by_node = layers_of_nodes(nodes, layers)
    layer_names = {layer.name for layer in layers}
    resolution = PinResolution()
    unknown: list[str] = []
    for name in wanted:
        if name in by_node:
            if by_node[name]:
                resolution.layers[name] = by_node[name]
            else:
                resolution.unmapped.append(name)
        elif name in layer_names:
            resolution.layers[name] = (name,)
        else:
            unknown.append(name)
    if unknown:
        candidates = sorted({n.name for n in nodes if n.op_type in QUANTIZABLE_OPS and n.name})
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(dict.fromkeys([*by_node, *sorted(layer_names)])), n=3)
            hints.append(f"{name!r}" + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""))
        raise InvalidInputError(
            f"{field_name}: {', '.join(hints)} is neither an ONNX node of the model nor a TensorRT layer; "
            f"quantizable nodes are: {', '.join(candidates[:20]) or '(none)'}"
        )
    return resolution


@dataclass(frozen=True)
class PinDecision:
    layer: str
    precision: str
    """trt.DataType member name set as layer.precision, e.g. HALF."""
    outputs: tuple[int, ...]
    """Output indices whose type is set (layer.set_output_type) to ``precision``."""


@dataclass
class PinPlan:
    decisions: list[PinDecision] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """Layer -> why it keeps TensorRT's choice."""


def pin_decisions(layer_names: Iterable[str], *, layers: Mapping[str, TrtLayer], precision: str) -> PinPlan:
    """Which layers get ``precision``: float-valued compute layers; shape, constant and Q/DQ layers are skipped."""
    plan = PinPlan()
    for name in dict.fromkeys(layer_names):
        layer = layers[name]
        if layer.type in NOT_PINNABLE_TYPES:
            plan.skipped[name] = f"{layer.type.lower()} layer"
            continue
        float_outputs = tuple(i for i, dtype in enumerate(layer.output_dtypes) if dtype in FLOAT_TYPES)
        if not float_outputs:
            plan.skipped[name] = f"outputs {', '.join(layer.output_dtypes) or 'none'} are not floating point"
            continue
        plan.decisions.append(PinDecision(layer=name, precision=precision, outputs=float_outputs))
    return plan
