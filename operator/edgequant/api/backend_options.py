"""Each backend's own options: the part of a QuantizationJob spec one backend reads, as one typed model per backend.

A backend receives its options, never the whole spec: the worker calls ``backend_options(spec, method)``, which
picks the model whose ``backend`` matches the method's catalogue row (``Method.backend_name``), and the backend
narrows the request's options to its own model before reading them. So a backend reading another backend's
section (the ONNX Runtime backend reading ``tensorrt``) fails type-checking, and what a backend depends on is
listed here. Adding a backend is adding its model to ``BackendOptions``: its fields are filled from the spec by name
(``_spec_sections``). Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field

from edgequant.api.methods import Method, ModelFormat
from edgequant.api.v1alpha1 import (
    Calibration,
    FallbackPrecision,
    InputContract,
    OnnxOptions,
    PostTraining,
    QuantizationJobSpec,
    TensorRTOptions,
    Training,
)


def _spec_sections(spec: QuantizationJobSpec) -> dict[str, Any]:
    """Where each option field comes from in the spec: one place for every backend's model."""
    return {
        "model_format": spec.model.resolved_format,
        "input": spec.model.input,
        "calibration": spec.calibration,
        "training": spec.training,
        "onnx": spec.onnx,
        "ptq": spec.ptq,
        "min_agreement": spec.acceptance.min_agreement,
        "tensorrt": spec.tensorrt,
        "fallback_precision": spec.mixed_precision.fallback_precision,
        "output_uri": spec.output.uri,
    }


class _Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method
    """The method to run (the spec's, or another of the same backend: a degrade-ladder rung, a remedy)."""

    @classmethod
    def from_spec(cls, spec: QuantizationJobSpec, method: Method, **derived: Any) -> Self:
        """The model's fields taken from the spec's sections by name (``derived``: fields computed by the subclass)."""
        sections = _spec_sections(spec)
        return cls(method=method, **{name: sections[name] for name in cls.model_fields if name in sections}, **derived)


class TFLiteBackendOptions(_Options):
    """tflite-*: the Keras model's format and input contract, calibration (cache, algorithm note), QAT training,
    ``ptq`` (bias correction on the Keras weights before tflite-int8's converter)."""

    backend: Literal["tflite"] = "tflite"
    model_format: ModelFormat | None
    input: InputContract
    calibration: Calibration | None
    training: Training | None
    ptq: PostTraining
    output_uri: str
    """The job's output prefix: the calibration cache's default place."""


class OnnxRuntimeBackendOptions(_Options):
    """onnx-dynamic / onnx-static: ``onnx`` and ``ptq`` settings, calibration, the ONNX model's input contract."""

    backend: Literal["onnxruntime"] = "onnxruntime"
    model_format: ModelFormat | None
    input: InputContract
    onnx: OnnxOptions
    ptq: PostTraining
    min_agreement: float | None
    """``acceptance.minAgreement``: ``ptq.sixteenBitActivations: auto`` widens activations only below it."""
    calibration: Calibration | None
    output_uri: str
    """The job's output prefix: the calibration cache's default place."""


class TorchQATBackendOptions(_Options):
    """torch-qat: the program's format and input contract, training, and ``onnx`` (its reduceRange)."""

    backend: Literal["pytorch"] = "pytorch"
    model_format: ModelFormat | None
    input: InputContract
    training: Training | None
    onnx: OnnxOptions


class TensorRTBackendOptions(_Options):
    """tensorrt-*: the engine build (``tensorrt``), calibration, the pins' precision, and the layer-ranking proxy."""

    backend: Literal["tensorrt"] = "tensorrt"
    tensorrt: TensorRTOptions
    calibration: Calibration | None
    fallback_precision: FallbackPrecision
    """The precision of pinned layers (``mixedPrecision.fallbackPrecision``)."""
    output_uri: str
    """The job's output prefix: the calibration cache's default place."""
    layer_ranking: OnnxRuntimeBackendOptions | None
    """What ranks its layers on the CPU (its catalogue row's proxy layer tool): onnx-static of the same model and
    data, without ``ptq``'s techniques, since TensorRT quantizes the model as it is. None: no proxy tool."""

    @classmethod
    def from_spec(cls, spec: QuantizationJobSpec, method: Method, **derived: Any) -> Self:
        ranking = None
        if method.row.layer_tool_proxy:
            bare = spec.model_copy(update={"ptq": PostTraining.bare()})
            ranking = OnnxRuntimeBackendOptions.from_spec(bare, Method.ONNX_STATIC)
        return super().from_spec(spec, method, layer_ranking=ranking, **derived)


AnyBackendOptions = TFLiteBackendOptions | OnnxRuntimeBackendOptions | TorchQATBackendOptions | TensorRTBackendOptions

BackendOptions = Annotated[AnyBackendOptions, Field(discriminator="backend")]
"""One backend's options, told apart by ``backend`` (the backend's package name, ``Method.backend_name``)."""

#: The options model per backend name, read from the union itself.
MODELS: dict[str, type[AnyBackendOptions]] = {
    get_args(model.model_fields["backend"].annotation)[0]: model for model in get_args(AnyBackendOptions)
}


def backend_options(spec: QuantizationJobSpec, method: Method | None = None) -> BackendOptions:
    """The options the backend of ``method`` (default: the spec's method) reads, from the spec's sections."""
    method = method or spec.method
    model = MODELS.get(method.backend_name)
    if model is None:
        raise ValueError(
            f"{method.value}: backend {method.backend_name!r} has no options model; add one to BackendOptions"
        )
    return model.from_spec(spec, method)
