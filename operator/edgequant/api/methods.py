"""The method catalogue: one frozen row per quantization method, the only place a method is described.

Everything else reads it: the API's ``Method`` enum and the CRD's enum and CEL rules, the backend registry,
each backend's method set and artifact names, the layer tools, the degrade ladder, the operator's image per
family and the method table in docs/architecture.md. Adding a method is adding a member here (and, when no
backend serves it yet, the backend). Backends and tools are named by "module:factory" paths, imported only
when a run needs them, so this module imports no framework and nothing else from edgequant.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class MethodFamily(enum.StrEnum):
    """Which quantizer image runs a method."""

    TFLITE = "tflite"
    TORCH = "torch"
    ONNX = "onnx"
    TENSORRT = "tensorrt"


class ModelFormat(enum.StrEnum):
    KERAS = "keras"
    H5 = "h5"
    SAVED_MODEL = "savedmodel"
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch-export"


#: How the model.format rule's fix names a format, where the bare name is not enough.
FORMAT_HINTS: dict[ModelFormat, str] = {
    ModelFormat.TORCH_EXPORT: "torch-export (a .pt2 file from torch.export.save, not TorchScript)",
}

KERAS_FORMATS = frozenset({ModelFormat.KERAS, ModelFormat.H5, ModelFormat.SAVED_MODEL})
ONNX_FORMATS = frozenset({ModelFormat.ONNX})

_TFLITE = "edgequant.backends.tflite.backend:TFLiteBackend"
_ORT = "edgequant.backends.onnxruntime.backend:OnnxRuntimeBackend"
_TORCH = "edgequant.backends.pytorch.backend:TorchQATBackend"
_TRT = "edgequant.backends.tensorrt.backend:TensorRTBackend"
_TFLITE_LAYERS = "edgequant.backends.tflite.sensitivity:for_request"
_ORT_LAYERS = "edgequant.backends.onnxruntime.sensitivity:for_request"
_ORT_PROXY_LAYERS = "edgequant.backends.onnxruntime.sensitivity:proxy_for_request"

#: ``float16_rung`` value meaning: the method's backend converts the model to float16 itself (``Float16Export``).
OWN_FLOAT16 = "self"


@dataclass(frozen=True)
class MethodSpec:
    """What edgequant knows about one method. Strings, not imports: the API layer stays framework-free."""

    name: str
    """The method's API name (``spec.method``)."""
    family: MethodFamily
    """The quantizer image that runs it."""
    backend: str
    """The backend's "module:factory"; the factory takes the run's Stores (keyword ``stores``)."""
    formats: frozenset[ModelFormat]
    """Model formats it accepts (``spec.model.format``)."""
    artifact_suffix: str
    """Middle of the artifact's file name: ``<model stem>.<suffix>.<ext>``."""
    summary: str
    """What you get, in a few words (the docs table)."""
    calibration: bool = False
    """Needs calibration data (``spec.calibration``)."""
    training: bool = False
    """Fine-tunes (QAT): needs ``spec.training``."""
    gpu: bool = False
    """Runs only on a GPU (``spec.resources.accelerator`` must not be cpu)."""
    layer_tool: str | None = None
    """"module:factory" of its per-layer tool (sensitivity, mixed precision); None: layers cannot be ranked."""
    layer_tool_proxy: bool = False
    """The layer tool ranks another runtime's quantization as a proxy: it cannot build this method's artifacts."""
    keeps_layers_float: bool = False
    """Its artifact can keep named layers in float (``mixedPrecision``), by its own tool or its backend."""
    float16_rung: str | None = None
    """The degrade ladder's float16 rung: another method's name, ``OWN_FLOAT16``, or None (already float16)."""
    options: str | None = None
    """The spec section of backend options it reads (``onnx``, ``tensorrt``), for the ignored-setting warnings."""
    range_algorithm: str | None = None
    """The only calibration range algorithm its converter uses, when ``calibration.algorithm`` is not read."""
    calibration_algorithms: tuple[str, ...] = ()
    """The range estimators its calibrator offers (``calibration.algorithm``), in the order the remedy tries them."""


class Method(enum.StrEnum):
    """The quantization workflows. Names are API: users and docs rely on them."""

    _value_: str
    row: MethodSpec

    def __new__(cls, row: MethodSpec) -> Method:
        member = str.__new__(cls, row.name)
        member._value_ = row.name
        member.row = row
        return member

    TFLITE_DYNAMIC_RANGE = MethodSpec(
        name="tflite-dynamic-range",
        family=MethodFamily.TFLITE,
        backend=_TFLITE,
        formats=KERAS_FORMATS,
        artifact_suffix="dynamic-range",
        summary="int8 weights, float activations; no calibration data",
        float16_rung="tflite-float16",
        range_algorithm="minmax",
    )
    TFLITE_FLOAT16 = MethodSpec(
        name="tflite-float16",
        family=MethodFamily.TFLITE,
        backend=_TFLITE,
        formats=KERAS_FORMATS,
        artifact_suffix="float16",
        summary="fp16 weights (RPi + XNNPACK, GPU delegates)",
        range_algorithm="minmax",
    )
    TFLITE_INT8 = MethodSpec(
        name="tflite-int8",
        family=MethodFamily.TFLITE,
        backend=_TFLITE,
        formats=KERAS_FORMATS,
        artifact_suffix="int8",
        summary="full integer, uint8 input/output (Coral, RPi)",
        calibration=True,
        layer_tool=_TFLITE_LAYERS,
        keeps_layers_float=True,
        float16_rung="tflite-float16",
        range_algorithm="minmax",
    )
    TFLITE_QAT = MethodSpec(
        name="tflite-qat",
        family=MethodFamily.TFLITE,
        backend=_TFLITE,
        formats=KERAS_FORMATS,
        artifact_suffix="qat-int8",
        summary="quantization-aware fine-tuning, then full int8",
        training=True,
        float16_rung="tflite-float16",
        range_algorithm="minmax",
    )
    TORCH_QAT = MethodSpec(
        # PT2E QAT needs an exported graph: a TorchScript module cannot be re-traced by torch.export.
        name="torch-qat",
        family=MethodFamily.TORCH,
        backend=_TORCH,
        formats=frozenset({ModelFormat.TORCH_EXPORT}),
        artifact_suffix="qat-int8",
        summary="QAT, exported as Q/DQ ONNX",
        training=True,
        float16_rung=OWN_FLOAT16,
        options="onnx",
    )
    ONNX_DYNAMIC = MethodSpec(
        name="onnx-dynamic",
        family=MethodFamily.ONNX,
        backend=_ORT,
        formats=ONNX_FORMATS,
        artifact_suffix="dynamic-int8",
        summary="int8 weights, dynamic activations",
        float16_rung=OWN_FLOAT16,
        options="onnx",
    )
    ONNX_STATIC = MethodSpec(
        name="onnx-static",
        family=MethodFamily.ONNX,
        backend=_ORT,
        formats=ONNX_FORMATS,
        artifact_suffix="qdq-int8",
        summary="static QDQ, MinMax / Entropy / Percentile calibration",
        calibration=True,
        layer_tool=_ORT_LAYERS,
        keeps_layers_float=True,
        float16_rung=OWN_FLOAT16,
        options="onnx",
        calibration_algorithms=("minmax", "entropy", "percentile"),
    )
    TENSORRT_FP16 = MethodSpec(
        name="tensorrt-fp16",
        family=MethodFamily.TENSORRT,
        backend=_TRT,
        formats=ONNX_FORMATS,
        artifact_suffix="fp16",
        summary="FP16 engine (GPU nodes)",
        gpu=True,
        options="tensorrt",
    )
    TENSORRT_INT8 = MethodSpec(
        name="tensorrt-int8",
        family=MethodFamily.TENSORRT,
        backend=_TRT,
        formats=ONNX_FORMATS,
        artifact_suffix="int8",
        summary="INT8 engine with calibrator + cache (GPU nodes)",
        calibration=True,
        gpu=True,
        layer_tool=_ORT_PROXY_LAYERS,
        layer_tool_proxy=True,
        float16_rung="tensorrt-fp16",
        options="tensorrt",
        calibration_algorithms=("entropy", "minmax", "percentile"),
    )
    TENSORRT_MIXED = MethodSpec(
        name="tensorrt-mixed",
        family=MethodFamily.TENSORRT,
        backend=_TRT,
        formats=ONNX_FORMATS,
        artifact_suffix="mixed",
        summary="mixed INT8/FP16 engine, sensitive layers pinned (GPU nodes)",
        calibration=True,
        gpu=True,
        layer_tool=_ORT_PROXY_LAYERS,
        layer_tool_proxy=True,
        keeps_layers_float=True,
        float16_rung="tensorrt-fp16",
        options="tensorrt",
        calibration_algorithms=("entropy", "minmax", "percentile"),
    )

    @classmethod
    def named(cls, name: str) -> Method:
        """The method called ``name``: what ``Method(name)`` does, which type checkers read as the row constructor."""
        for method in cls:
            if method.value == name:
                return method
        raise ValueError(f"{name!r} is not a valid {cls.__name__}")

    @property
    def family(self) -> MethodFamily:
        return self.row.family

    @property
    def formats(self) -> frozenset[ModelFormat]:
        return self.row.formats

    @property
    def needs_calibration(self) -> bool:
        return self.row.calibration

    @property
    def needs_training(self) -> bool:
        return self.row.training

    @property
    def needs_gpu(self) -> bool:
        return self.row.gpu

    @property
    def artifact_suffix(self) -> str:
        return self.row.artifact_suffix

    @property
    def backend_name(self) -> str:
        """Its backend's package under ``edgequant.backends`` (``onnxruntime``): the key of its backend options."""
        return self.row.backend.partition(":")[0].removeprefix("edgequant.backends.").partition(".")[0]

    @property
    def has_own_layer_tool(self) -> bool:
        """Its own tool quantizes layers one at a time and builds its artifacts with layers kept in float."""
        return self.row.layer_tool is not None and not self.row.layer_tool_proxy

    @property
    def ranks_layers(self) -> bool:
        """Per-layer sensitivity can rank its layers (with its own tool or a proxy)."""
        return self.row.layer_tool is not None

    @property
    def keeps_layers_float(self) -> bool:
        return self.row.keeps_layers_float

    @property
    def float16_rung(self) -> Method | None:
        """The degrade ladder's float16 rung; the method itself: its backend's float16 conversion."""
        rung = self.row.float16_rung
        if rung is None:
            return None
        return self if rung == OWN_FLOAT16 else next(m for m in Method if m.value == rung)


def _check_catalogue() -> None:
    for method in Method:
        row = method.row
        if row.layer_tool_proxy and row.layer_tool is None:
            raise ValueError(f"{method.value}: layer_tool_proxy without a layer_tool")
        if row.float16_rung not in (None, OWN_FLOAT16) and row.float16_rung not in {m.value for m in Method}:
            raise ValueError(f"{method.value}: float16_rung {row.float16_rung!r} is not a method")
        if not row.formats:
            raise ValueError(f"{method.value}: accepts no model format")


_check_catalogue()


def methods_served_by(module: str) -> frozenset[Method]:
    """The methods whose backend factory lives in ``module`` (a backend's ``methods``)."""
    return frozenset(m for m in Method if m.row.backend.partition(":")[0] == module)


def families() -> list[MethodFamily]:
    """The families some method uses, in catalogue order (the images the operator needs)."""
    return list(dict.fromkeys(m.family for m in Method))


# --------------------------------------------------------------------------- CEL, generated from the rows


def cel_names(methods: Iterable[Method]) -> str:
    """A CEL list literal of method names."""
    return "[" + ", ".join(f"'{m.value}'" for m in methods) + "]"


def cel_method_in(methods: Iterable[Method]) -> str:
    return f"self.method in {cel_names(methods)}"


def names(methods: Iterable[Method]) -> str:
    """Method names for a message: 'a / b / c'."""
    return " / ".join(m.value for m in methods)


def format_groups() -> list[tuple[list[Method], frozenset[ModelFormat]]]:
    """Methods grouped by the formats they accept, in catalogue order."""
    groups: dict[frozenset[ModelFormat], list[Method]] = {}
    for method in Method:
        groups.setdefault(method.formats, []).append(method)
    return [(methods, formats) for formats, methods in groups.items()]


def _ordered(formats: frozenset[ModelFormat]) -> list[ModelFormat]:
    return [f for f in ModelFormat if f in formats]


def cel_format_fits() -> str:
    """CEL: spec.model.format, when set, is one the method accepts."""
    alternatives = [
        f"({cel_method_in(methods)} && self.model.format in [{', '.join(repr(f.value) for f in _ordered(formats))}])"
        for methods, formats in format_groups()
    ]
    return "!has(self.model.format) || " + " || ".join(alternatives)


def format_fix() -> str:
    """The model.format rule's fix, naming what each group of methods takes (no '; ': messages are joined by it)."""
    parts = []
    for methods, formats in format_groups():
        taken = [FORMAT_HINTS.get(f, f.value) for f in _ordered(formats)]
        listed = taken[0] if len(taken) == 1 else ", ".join(taken[:-1]) + " or " + taken[-1]
        parts.append(f"{names(methods)} take{'s' if len(methods) == 1 else ''} {listed}")
    return f"use a model.format the method takes ({', '.join(parts)}), or change method"


# --------------------------------------------------------------------------- the docs table


def markdown_table() -> str:
    """The method table of docs/architecture.md (a unit test keeps the page equal to this)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else ""

    rows = [
        "| method | image | backend | formats | calibration | training | GPU | layer tool | float16 rung | artifact | what you get |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in Method:
        r = m.row
        tool = "" if r.layer_tool is None else ("proxy" if r.layer_tool_proxy else "own")
        rung = (
            ""
            if r.float16_rung is None
            else ("own conversion" if r.float16_rung == OWN_FLOAT16 else f"`{r.float16_rung}`")
        )
        rows.append(
            f"| `{m.value}` | {r.family.value} | {m.backend_name} | {', '.join(f.value for f in _ordered(r.formats))} | "
            f"{yes(r.calibration)} | {yes(r.training)} | {yes(r.gpu)} | {tool} | {rung} | `.{r.artifact_suffix}.` | {r.summary} |"
        )
    return "\n".join(rows) + "\n"
