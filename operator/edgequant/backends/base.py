"""The small interface every framework backend implements.

Phases follow the shape of a calibrating quantizer: the worker prepares data,
the backend ``quantize``s the FP32 model into an artifact, and ``load`` gives
a ``Predictor`` for the FP32 model or any artifact so that one evaluator
scores both with the same data. Optional capabilities (per-layer sensitivity,
listing quantizable layers) are separate protocols a backend may also satisfy.

Nothing here imports a framework; backends import theirs inside their module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from edgequant.storage import Stores

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import AnyBackendOptions, BackendOptions
from edgequant.util.errors import InvalidInputError

OptionsT = TypeVar("OptionsT", bound=AnyBackendOptions)


@dataclass(frozen=True)
class TensorContract:
    """What a model input expects: the evaluator converts float-preprocessed images to this.

    For float inputs scale/zero_point are None. For integer inputs the float
    value v maps to round(v / scale) + zero_point, clipped to the dtype range.
    """

    dtype: str
    shape: tuple[int, ...]
    scale: float | None = None
    zero_point: int | None = None


class InputContractError(InvalidInputError):
    """Data of the wrong dtype or range reached a model, e.g. float/255 fed to a uint8 full-INT8 model."""


def describe_contract(contract: TensorContract) -> str:
    if contract.scale is None:
        return f"{contract.dtype} {list(contract.shape)}"
    return f"{contract.dtype} {list(contract.shape)} (scale {contract.scale:.6g}, zero point {contract.zero_point})"


def to_input_contract(batch: np.ndarray, contract: TensorContract) -> np.ndarray:
    """Convert preprocessed float32 inputs to what the model takes: float as is, integers quantized.

    Integer inputs get ``round(v / scale) + zero_point`` clipped to the dtype, so
    a full-INT8 model calibrated on [0, 1] floats receives uint8 0-255 pixels.
    """
    if not np.issubdtype(batch.dtype, np.floating):
        raise InputContractError(
            f"expected preprocessed float32 inputs, got {batch.dtype}: run the data through "
            "edgequant.data.preprocess first (integers are produced here, from the model's scale and zero point)"
        )
    dtype = np.dtype(contract.dtype)
    if np.issubdtype(dtype, np.floating):
        return batch.astype(dtype, copy=False)
    if contract.scale is None or contract.zero_point is None:
        raise InputContractError(f"integer input {describe_contract(contract)} without a scale and zero point")
    info = np.iinfo(dtype)
    q = np.round(batch / np.float32(contract.scale)) + contract.zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def check_batch_matches(batch: np.ndarray, contract: TensorContract) -> None:
    """Refuse data a model cannot take, naming the classic float/255-into-uint8 bug. Predictors call this."""
    expected = np.dtype(contract.dtype)
    if batch.dtype == expected:
        return
    if np.issubdtype(expected, np.integer) and np.issubdtype(batch.dtype, np.floating):
        low, high = (float(batch.min()), float(batch.max())) if batch.size else (0.0, 0.0)
        bug = " (float/255 fed to a full-INT8 model)" if low >= 0.0 and high <= 1.0 else ""
        info = np.iinfo(expected)
        raise InputContractError(
            f"the model takes {describe_contract(contract)} values {info.min}-{info.max}, but got {batch.dtype} "
            f"values in [{low:.3g}, {high:.3g}]{bug}: feed round(x / scale) + zero_point "
            "(edgequant.backends.base.to_input_contract); for 1/255 scaling that is the uint8 pixels as they are"
        )
    raise InputContractError(f"the model takes {describe_contract(contract)}, got {batch.dtype}")


@dataclass
class Batches:
    """A replayable source of preprocessed (float32, model layout) image batches with labels."""

    make_iter: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    count: int
    batch_size: int

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.make_iter()

    def held_out(self, *, every: int) -> tuple[Batches, np.ndarray]:
        """(fit, held-out inputs): every ``every``-th sample is held out (kept in memory, the post-training search
        scores candidates on it), the others stream again on each pass."""
        held: list[np.ndarray] = []
        index = 0
        for x, _ in self:
            held.extend(np.asarray(x[held_out_mask(index, len(x), every)], dtype=np.float32))
            index += len(x)
        if not held:
            raise ValueError("no held-out samples")

        def fit_iter() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            start = 0
            for x, y in self:
                keep = ~held_out_mask(start, len(x), every)
                start += len(x)
                if keep.any():
                    yield x[keep], y[keep]

        return Batches(make_iter=fit_iter, count=index - len(held), batch_size=self.batch_size), np.stack(held)


def held_out_mask(start: int, count: int, every: int) -> np.ndarray:
    """True for the samples (global indices start..start+count) held out: every ``every``-th one."""
    mask: np.ndarray = (np.arange(start, start + count) % every) == every - 1
    return mask


@dataclass
class QuantizeRequest:
    """Everything a backend needs for one quantization run; paths are local.

    ``options`` are the backend's own (``api.backend_options``), not the whole spec: a backend narrows them with
    ``own_options`` and reads only its own fields.
    """

    options: BackendOptions
    model_path: Path
    workdir: Path
    calibration: Batches | None = None
    training: Batches | None = None
    keep_float: Sequence[str] = ()
    """Layer / node names (source-model names) kept in higher precision."""
    log: Callable[[str], None] = print
    stores: Stores | None = None
    """The run's storage (relative file:// URIs resolved), for side results such as the calibration cache."""

    @property
    def method(self) -> api.Method:
        return self.options.method


def own_options(options: BackendOptions, model: type[OptionsT], *, backend: str) -> OptionsT:
    """``options`` as ``backend``'s own model; a method of another backend is refused, naming it."""
    if not isinstance(options, model):
        raise InvalidInputError(f"spec.method: the {backend} backend does not run {options.method.value}")
    return options


@dataclass
class QuantizedArtifact:
    path: Path
    """The single file published as the artifact (.tflite, .onnx, .engine)."""
    method: api.Method
    input: TensorContract
    extra_files: list[Path] = field(default_factory=list)
    """Side files published beside the artifact (e.g. a calibration cache)."""
    notes: list[str] = field(default_factory=list)
    """Facts for the report (e.g. 'reduce_range enabled: CPU lacks VNNI')."""


class Predictor(Protocol):
    """Runs one model (FP32 or quantized) on batches already converted to its input contract."""

    input: TensorContract

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs (logits or probabilities), shape (N, classes), float32."""
        ...


@runtime_checkable
class Backend(Protocol):
    name: str
    methods: frozenset[api.Method]

    def quantize(self, request: QuantizeRequest) -> QuantizedArtifact: ...

    def load(self, path: Path, *, options: BackendOptions) -> Predictor:
        """Load the FP32 source model or an artifact for evaluation (``options``: this backend's own)."""
        ...


@dataclass
class BaselineArtifact:
    """The FP32 model in the artifact's own runtime format (e.g. a float .tflite), for a fair comparison."""

    path: Path
    input: TensorContract
    format: str
    """Short name for the report, e.g. 'tflite-fp32'."""


@runtime_checkable
class BaselineExport(Protocol):
    """Optional: export the FP32 model to the runtime the artifacts use.

    When a backend has it, baseline size, accuracy and latency come from this
    file in the same runtime as the quantized artifact; otherwise from the
    source model file through ``Backend.load``.
    """

    def export_baseline(self, request: QuantizeRequest) -> BaselineArtifact: ...


@runtime_checkable
class Float16Export(Protocol):
    """Optional: the float16 rung of the degrade ladder for a family without a float16 method (ONNX Runtime).

    The artifact keeps the spec's method name; its notes say it is the float16 conversion.
    """

    def export_float16(self, request: QuantizeRequest) -> QuantizedArtifact: ...


@runtime_checkable
class LayerIntrospection(Protocol):
    """Optional: list the quantizable layers by their names in the source model."""

    def quantizable_layers(self, request: QuantizeRequest) -> list[str]: ...
