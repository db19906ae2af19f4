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
from typing import Protocol, runtime_checkable

import numpy as np

from edgequant.api import v1alpha1 as api


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


@dataclass
class Batches:
    """A replayable source of preprocessed (float32, model layout) image batches with labels."""

    make_iter: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    count: int
    batch_size: int

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.make_iter()


@dataclass
class QuantizeRequest:
    """Everything a backend needs for one quantization run; paths are local."""

    spec: api.QuantizationJobSpec
    method: api.Method
    model_path: Path
    workdir: Path
    calibration: Batches | None = None
    training: Batches | None = None
    keep_float: Sequence[str] = ()
    """Layer / node names (source-model names) kept in higher precision."""
    log: Callable[[str], None] = print


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

    def load(self, path: Path, *, spec: api.QuantizationJobSpec) -> Predictor:
        """Load the FP32 source model or an artifact for evaluation."""
        ...


@runtime_checkable
class LayerIntrospection(Protocol):
    """Optional: list the quantizable layers by their names in the source model."""

    def quantizable_layers(self, request: QuantizeRequest) -> list[str]: ...
