"""Calibration for ONNX Runtime fed by the shared data pipeline (``backends.base.Batches``).

``BatchesReader`` is the ``CalibrationDataReader`` ONNX Runtime asks for.
``calibrate`` hands it to ORT's histogram calibrators (Entropy,
Percentile) one batch per ``collect_data`` call: they keep every
intermediate tensor of every batch they are given in memory and stack them
with ``np.asarray`` — 500 images through a 224x224 CNN is gigabytes, and a
shorter last batch crashes the stacking. One batch per call merges the
histograms as they grow, so memory stays one batch and any batch size works.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, TensorsData, create_calibrator
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.backends.onnxruntime.options import StaticSettings

#: ONNX Runtime's calibration method for each spec.calibration.algorithm.
ORT_METHOD: dict[api.CalibrationAlgorithm, CalibrationMethod] = {
    api.CalibrationAlgorithm.MINMAX: CalibrationMethod.MinMax,
    api.CalibrationAlgorithm.ENTROPY: CalibrationMethod.Entropy,
    api.CalibrationAlgorithm.PERCENTILE: CalibrationMethod.Percentile,
}
#: The ops whose tensors quantize_static calibrates by default: ranges for anything else are never used.
CALIBRATED_OPS: tuple[str, ...] = tuple(sorted(set(QLinearOpsRegistry) | set(QDQRegistry)))


def model_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], *, fixed_batch: int | None, max_batch: int | None = None
) -> Iterator[np.ndarray]:
    """Contiguous float32 inputs; for a model with a fixed batch size, re-chunked to exactly that size.

    The last chunk of a fixed-batch model is completed with its own samples
    repeated (never zeros, which would widen the ranges). Otherwise batches
    larger than ``max_batch`` (the memory budget's size) are split.
    """
    if fixed_batch is None:
        for x, _ in batches:
            step = max_batch or len(x) or 1
            for start in range(0, len(x), step):
                yield np.ascontiguousarray(x[start : start + step], dtype=np.float32)
        return
    pending: list[np.ndarray] = []
    held = 0
    for x, _ in batches:
        pending.append(np.asarray(x, dtype=np.float32))
        held += len(x)
        while held >= fixed_batch:
            merged = np.concatenate(pending)
            yield np.ascontiguousarray(merged[:fixed_batch])
            rest = merged[fixed_batch:]
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        merged = np.concatenate(pending)
        yield np.ascontiguousarray(np.resize(merged, (fixed_batch, *merged.shape[1:])))


class BatchesReader(CalibrationDataReader):
    """Feeds model inputs to ONNX Runtime; with ``per_call`` set, ends each ``collect_data`` call after that many batches."""

    def __init__(self, arrays: Iterable[np.ndarray], *, input_name: str, per_call: int | None = None) -> None:
        self._arrays = iter(arrays)
        self._input_name = input_name
        self._per_call = per_call
        self._given = 0
        self._next = next(self._arrays, None)

    @property
    def exhausted(self) -> bool:
        return self._next is None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next is None or (self._per_call is not None and self._given >= self._per_call):
            self._given = 0
            return None
        feed = {self._input_name: self._next}
        self._next = next(self._arrays, None)
        self._given += 1
        return feed


def calibrator_options(settings: StaticSettings) -> dict[str, object]:
    """``create_calibrator``'s extra options for these settings (its own key names)."""
    options: dict[str, object] = {"symmetric": settings.symmetric_activations}
    if settings.algorithm is api.CalibrationAlgorithm.PERCENTILE:
        options["percentile"] = settings.percentile
    return options


def calibrate(
    *,
    model_path: Path,
    batches: Batches,
    input_name: str,
    fixed_batch: int | None,
    settings: StaticSettings,
    workdir: Path,
    log: Callable[[str], None] = lambda _m: None,
    max_batch: int | None = None,
) -> TensorsData:
    """Ranges of every float tensor of ``model_path`` on ``batches``, by ``settings.algorithm``.

    ``max_batch`` bounds the samples per run: ONNX Runtime holds a run's activations (and the calibrators
    their reduced copies) for the whole batch, gigabytes for 64 images of a 224x224 CNN.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    calibrator = create_calibrator(
        model_path,
        list(CALIBRATED_OPS),
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=ORT_METHOD[settings.algorithm],
        extra_options=calibrator_options(settings),
    )
    # MinMax reduces each batch to per-tensor extremes inside the augmented graph: one call holds little.
    per_call = None if settings.algorithm is api.CalibrationAlgorithm.MINMAX else 1
    reader = BatchesReader(
        model_batches(batches, fixed_batch=fixed_batch, max_batch=max_batch), input_name=input_name, per_call=per_call
    )
    if reader.exhausted:
        raise ValueError("no calibration batches")
    done = 0
    # ORT's histogram calibrators print progress with print(): keep stdout for the CLI's table.
    with contextlib.redirect_stdout(sys.stderr):
        while not reader.exhausted:
            calibrator.collect_data(reader)
            done += 1
        log(f"calibration ({settings.algorithm.value}): {batches.count} samples collected in {done} call(s)")
        ranges = calibrator.compute_data()
    if not isinstance(ranges, TensorsData):
        raise TypeError(f"ONNX Runtime's calibrator returned {type(ranges).__name__}, not TensorsData")
    return ranges
