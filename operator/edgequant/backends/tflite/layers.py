"""Per-layer control of TFLite full-INT8 quantization, named in the source model's layer names.

The converter calibrates once (``_experimental_calibrate_only``, as TFLite's
QuantizationDebugger does); ``mlir_quantize`` then turns the calibrated model
into an INT8 model any number of times, keeping chosen ops in float through
its ``denylisted_nodes`` (op output tensor names). Re-quantizing takes tens of
milliseconds, so per-layer sensitivity and mixed precision never recalibrate.

TFLite tensor names carry the Keras layer scopes, but Keras 3 uniquifies
them when it traces: layer ``conv2d`` becomes scope ``conv2d_1`` and layer
``conv2d_1`` becomes ``conv2d_1_2``. ``assign_layers`` resolves this as a
matching between the scopes seen and the layer names (pure, tested without
TensorFlow).
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Op kinds that compute nothing worth quantizing or pinning on their own.
NON_COMPUTE_OPS = frozenset(
    {
        "QUANTIZE",
        "DEQUANTIZE",
        "SHAPE",
        "STRIDED_SLICE",
        "PACK",
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "CAST",
        "GATHER",
        "NumericVerify",
        "DELEGATE",
    }
)


@dataclass(frozen=True)
class RawOp:
    """One op of a .tflite graph as the interpreter lists it."""

    index: int
    kind: str
    inputs: tuple[str, ...]
    """Activation tensors it reads (model inputs or other ops' outputs)."""
    constants: tuple[str, ...]
    """Constant tensors it reads (weights, biases, shapes)."""
    output: str
    is_model_output: bool = False


@dataclass(frozen=True)
class LayerOp:
    op: RawOp
    layer: str | None
    """Source layer owning the op; None for ops no layer computes (shape arithmetic, I/O quantize)."""


@dataclass
class LayerMap:
    """Ops grouped by source layer, in graph order."""

    ops: list[LayerOp]
    layers: list[str] = field(default_factory=list)
    """Quantizable layers (owning at least one compute op), in graph order."""

    def __post_init__(self) -> None:
        if not self.layers:
            seen: dict[str, None] = {}
            for lop in self.ops:
                if lop.layer is not None and lop.op.kind not in NON_COMPUTE_OPS:
                    seen.setdefault(lop.layer, None)
            self.layers = list(seen)

    def nodes_of(self, layers: Iterable[str]) -> list[str]:
        """Output tensor names (``denylisted_nodes``) of every op of these layers; unknown names are an error."""
        wanted = list(dict.fromkeys(layers))
        unknown = [name for name in wanted if name not in self.layers]
        if unknown:
            raise KeyError(
                f"unknown layer(s) {unknown}: mixedPrecision.pinnedLayers must name layers of the source model; "
                f"quantizable layers are {self.layers}"
            )
        chosen = set(wanted)
        return [lop.op.output for lop in self.ops if lop.layer in chosen]

    def nodes_except(self, layer: str) -> list[str]:
        """Every op output except those of ``layer``: denylisting them quantizes that layer alone."""
        mine = set(self.nodes_of([layer]))
        return [lop.op.output for lop in self.ops if lop.op.output not in mine]


_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<n>\d+)$")


def _components(name: str) -> list[list[str]]:
    """Scope components of each ';'-joined part of a tensor name, without the op name at the end."""
    parts = []
    for part in name.split(";"):
        comps = [c for c in part.split("/") if c]
        parts.append(comps[:-1] if len(comps) > 1 else [])
    return parts


def _candidates(scope: str, names: set[str]) -> list[str]:
    """Layers a scope can stand for: suffixed ('conv2d' -> 'conv2d_1', Keras 3 tracing) first, then exact."""
    out = []
    m = _SUFFIX.match(scope)
    if m and m.group("base") in names:
        out.append(m.group("base"))
    if scope in names:
        out.append(scope)
    return out


def _match_scopes(scopes: Sequence[str], names: set[str]) -> dict[str, str]:
    """Maximum matching scope -> layer (Kuhn's algorithm), preferring suffixed readings; leftovers take their first candidate."""
    cands = {s: _candidates(s, names) for s in scopes}
    owner: dict[str, str] = {}

    def augment(scope: str, seen: set[str]) -> bool:
        for layer in cands[scope]:
            if layer in seen:
                continue
            seen.add(layer)
            if layer not in owner or augment(owner[layer], seen):
                owner[layer] = scope
                return True
        return False

    for scope in scopes:
        augment(scope, set())
    match = {scope: layer for layer, scope in owner.items()}
    for scope in scopes:
        if scope not in match and cands[scope]:
            match[scope] = cands[scope][0]
    return match


def _scopes_of(name: str, names: set[str]) -> list[str]:
    """The deepest component of each part that can name a layer."""
    found = []
    for comps in _components(name):
        for comp in reversed(comps):
            if _candidates(comp, names):
                found.append(comp)
                break
    return found


def assign_layers(
    ops: Sequence[RawOp], *, layer_names: Sequence[str] | None, output_layer: str | None = None
) -> LayerMap:
    """Give each op its source layer.

    Weights name their layer most reliably, so an op's constants decide first,
    then its output name. Without source layer names (a SavedModel source) the
    scope component before the op name is the layer name. An op producing the
    model output that matches nothing (Keras names it ``StatefulPartitionedCall``)
    belongs to ``output_layer`` when given.
    """
    if layer_names is None:
        return LayerMap(ops=[LayerOp(op=op, layer=_bare_scope(op)) for op in ops])
    names = set(layer_names)
    all_scopes: dict[str, None] = {}
    per_op: list[tuple[list[str], list[str]]] = []
    for op in ops:
        from_constants = [s for c in op.constants for s in _scopes_of(c, names)]
        from_output = _scopes_of(op.output, names)
        per_op.append((from_constants, from_output))
        for s in from_constants + from_output:
            all_scopes.setdefault(s, None)
    match = _match_scopes(list(all_scopes), names)
    assigned: list[LayerOp] = []
    for op, (from_constants, from_output) in zip(ops, per_op):
        layer = next((match[s] for s in from_constants + from_output if s in match), None)
        if layer is None and op.is_model_output and op.kind not in NON_COMPUTE_OPS:
            layer = output_layer
        if layer is None and op.kind not in NON_COMPUTE_OPS:
            layer = op.output  # unnamed compute op: keep it addressable by its tensor name
        assigned.append(LayerOp(op=op, layer=layer))
    return LayerMap(ops=assigned)


def _bare_scope(op: RawOp) -> str | None:
    if op.kind in NON_COMPUTE_OPS:
        return None
    for name in [*op.constants, op.output]:
        comps = _components(name)[0]
        if comps:
            return comps[-1]
    return op.output


# --------------------------------------------------------------------------- TensorFlow side


def read_graph(model: bytes) -> list[RawOp]:
    """The ops of a .tflite model (subgraph 0) with activation and constant inputs told apart."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    details = interpreter._get_ops_details()  # the listing TFLite's QuantizationDebugger uses too
    produced = {int(i) for op in details for i in op["outputs"]}
    model_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    model_outputs = {int(d["index"]) for d in interpreter.get_output_details()}

    def name(i: int) -> str:
        return str(interpreter._get_tensor_details(int(i), 0)["name"])

    ops = []
    for op in details:
        if op["op_name"] == "DELEGATE" or not len(op["outputs"]):
            continue
        ins = [int(i) for i in op["inputs"] if int(i) >= 0]
        out = int(op["outputs"][0])
        ops.append(
            RawOp(
                index=int(op["index"]),
                kind=str(op["op_name"]),
                inputs=tuple(name(i) for i in ins if i in produced or i in model_inputs),
                constants=tuple(name(i) for i in ins if i not in produced and i not in model_inputs),
                output=name(out),
                is_model_output=out in model_outputs or any(int(o) in model_outputs for o in op["outputs"]),
            )
        )
    return ops


def source_layer_names(keras_model: Any) -> tuple[list[str], str | None]:
    """Leaf layer names of a Keras model (nested models flattened) and the layer producing its output."""
    leaves: list[str] = []

    def walk(layer: Any) -> None:
        children = getattr(layer, "layers", None)
        if children:
            for child in children:
                walk(child)
        elif type(layer).__name__ != "InputLayer":
            leaves.append(layer.name)

    walk(keras_model)
    output_layer = leaves[-1] if leaves else None
    return leaves, output_layer


def calibrate(converter: Any) -> bytes:
    """Run the converter's calibration only; the result feeds ``quantize_calibrated`` any number of times."""
    converter._experimental_calibrate_only = True  # the switch TFLite's QuantizationDebugger sets
    with contextlib.redirect_stdout(
        io.StringIO()
    ):  # from_keras_model prints "Saved artifact at ..."; stdout is for results
        return bytes(converter.convert())


def quantize_calibrated(
    calibrated: bytes,
    *,
    keep_float_nodes: Sequence[str] = (),
    io_dtype: str = "uint8",
    debug: bool = False,
    whole_model: bool = True,
) -> bytes:
    """INT8 model from a calibrated one, with the ops writing ``keep_float_nodes`` left in float.

    ``io_dtype`` uint8 is the shipped full-INT8 contract; float32 keeps float I/O
    (sensitivity runs). ``debug`` adds NumericVerify ops comparing every
    quantized op with a float twin: fed the same quantized-path input
    (``whole_model`` False, the op's own error) or fed by a float shadow graph
    (``whole_model`` True, the cumulative error): the fast ranking's raw material.
    """
    from tensorflow.lite.python import convert

    from edgequant.backends.tflite.tf import import_tf

    tf = import_tf()
    io = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_dtype]
    return bytes(
        convert.mlir_quantize(
            calibrated,
            input_data_type=tf.float32 if debug else io,
            output_data_type=tf.float32 if debug else io,
            enable_numeric_verify=debug,
            enable_whole_model_verify=debug and whole_model,
            denylisted_nodes=list(keep_float_nodes) or None,
        )
    )


def map_layers(calibrated: bytes, *, keras_model: Any | None) -> LayerMap:
    """The calibrated model's ops grouped by the source model's layers (tensor scopes for SavedModels)."""
    names, output_layer = source_layer_names(keras_model) if keras_model is not None else (None, None)
    return assign_layers(read_graph(calibrated), layer_names=names, output_layer=output_layer)


def with_constants_of(calibrated: bytes, float_model: bytes, *, of_ops: Collection[str] | None = None) -> bytes | None:
    """``calibrated`` with its constant buffers taken from ``float_model``; None when the two graphs differ.

    ``of_ops`` (op output tensor names, as ``quantize_calibrated``'s ``keep_float_nodes``) limits the move to the
    constants those ops read: pinned layers get their float weights back while the others keep tuned ones.

    A calibrated model is the float conversion plus recorded activation ranges, so a Keras model whose weights
    changed (rounded kernels, corrected biases) converts to the same graph with other constant bytes. Moving those
    bytes into an existing calibration skips a calibration pass (minutes on a 224x224 model); the ranges are the
    first model's, which the weight changes move by at most their own small output shift. Only float32 constants
    may differ (buffers no tensor reads, such as the conversion metadata, are the calibrated model's): a changed shape, op, tensor or integer constant means another graph, and the caller calibrates.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    float32 = 0  # tflite.TensorType.FLOAT32
    target = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    source = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_model))
    if len(target.buffers) != len(source.buffers) or len(target.subgraphs) != len(source.subgraphs):
        return None
    if [c.builtinCode for c in target.operatorCodes] != [c.builtinCode for c in source.operatorCodes]:
        return None
    kinds: dict[int, set[int]] = {}
    for mine, theirs in zip(target.subgraphs, source.subgraphs):
        if len(mine.tensors) != len(theirs.tensors) or len(mine.operators) != len(theirs.operators):
            return None
        for a, b in zip(mine.tensors, theirs.tensors):
            if (a.name, a.buffer, a.type, _listed(a.shape)) != (b.name, b.buffer, b.type, _listed(b.shape)):
                return None
            kinds.setdefault(a.buffer, set()).add(a.type)
        for a, b in zip(mine.operators, theirs.operators):
            if (a.opcodeIndex, _listed(a.inputs), _listed(a.outputs)) != (
                b.opcodeIndex,
                _listed(b.inputs),
                _listed(b.outputs),
            ):
                return None
    if of_ops is not None:
        wanted = {name.encode() if isinstance(name, str) else name for name in of_ops}
        read: set[int] = set()
        for graph in target.subgraphs:
            for op in graph.operators:
                if any(graph.tensors[i].name in wanted for i in _listed(op.outputs)):
                    read.update(graph.tensors[i].buffer for i in _listed(op.inputs) if i >= 0)
        kinds = {index: kind for index, kind in kinds.items() if index in read}
    for index, kind in kinds.items():  # buffers no tensor reads (metadata: the conversion's options) stay the target's
        old, new = target.buffers[index].data, source.buffers[index].data
        if old is None and new is None:
            continue
        if old is None or new is None or len(old) != len(new):
            return None
        if bytes(bytearray(old)) != bytes(bytearray(new)):
            if kind != {float32}:
                return None
            target.buffers[index].data = new
    return bytes(flatbuffer_utils.convert_object_to_bytearray(target))


def _listed(values: Any) -> list[Any]:
    """A flatbuffer object's vector field as a list (the object API leaves an empty one as None)."""
    return [] if values is None else list(values)


def with_source_weights(calibrated: bytes, source_float: bytes | None, nodes: Sequence[str]) -> bytes | None:
    """``calibrated`` with the ops writing ``nodes`` (the ones kept in float) reading ``source_float``'s constants.

    ``source_float`` None (spec.ptq did not tune the weights) or no node: ``calibrated`` as it is. None when the
    two graphs differ (``with_constants_of``): the kept layers can only have the tuned weights.
    """
    if source_float is None or not nodes:
        return calibrated
    return with_constants_of(calibrated, source_float, of_ops=nodes)
