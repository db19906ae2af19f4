"""Calibration on the CPU with ONNX Runtime, for TensorRT: a native calibration cache, or a Q/DQ model.

ONNX Runtime's own ``write_calibration_table`` (onnxruntime.quantization.quant_utils)
writes calibration.json, calibration.flatbuffers (the table ORT's TensorRT
execution provider reads) and a plain ``<tensor> <max>`` calibration.cache;
none of them is TensorRT's native cache (header ``TRT-<version>-<calibrator>``,
hex float32 scales). So the ranges come from ONNX Runtime's calibrator and the
native file is written by ``cache_format``. Both paths are fed the same fixed,
padded batches the GPU calibrator would get, so the manifest describes either.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.backends.tensorrt.cache_format import CalibrationTable, from_ranges
from edgequant.backends.tensorrt.calibrator import fixed_batches

#: ONNX Runtime's name for each calibration algorithm.
_ORT_METHODS = {
    api.CalibrationAlgorithm.MINMAX: "MinMax",
    api.CalibrationAlgorithm.ENTROPY: "Entropy",
    api.CalibrationAlgorithm.PERCENTILE: "Percentile",
}


class _OneBatchReader:
    """ONNX Runtime's CalibrationDataReader protocol over the padded batches, one batch per ``collect_data`` call.

    ORT's histogram calibrators (entropy, percentile) keep every intermediate
    tensor of the batches one call gives them; feeding one batch per call
    merges histograms as they grow, so memory stays one batch whatever the set.
    """

    def __init__(self, batches: Batches, *, input_name: str, batch_size: int, sample_shape: Sequence[int]) -> None:
        self._iter: Iterator[Any] = fixed_batches((x for x, _ in batches), batch_size=batch_size, sample_shape=sample_shape)
        self._input_name = input_name
        self._next = next(self._iter, None)
        self._given = False

    @property
    def exhausted(self) -> bool:
        return self._next is None

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next is None or self._given:
            self._given = False
            return None
        feed = {self._input_name: self._next.data}
        self._next = next(self._iter, None)
        self._given = True
        return feed


def _extra_options(algorithm: api.CalibrationAlgorithm, percentile: float) -> dict[str, Any]:
    # Symmetric ranges: TensorRT's INT8 is symmetric (zero point 0).
    options: dict[str, Any] = {"symmetric": True}
    if algorithm is api.CalibrationAlgorithm.PERCENTILE:
        options["percentile"] = percentile
    return options


def collect_ranges(
    *,
    model_path: Path,
    batches: Batches,
    input_name: str,
    batch_size: int,
    sample_shape: Sequence[int],
    algorithm: api.CalibrationAlgorithm,
    percentile: float,
    workdir: Path,
) -> Any:
    """ONNX Runtime's TensorsData for every float tensor (ONNX tensor names = TensorRT tensor names), on the CPU."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    workdir.mkdir(parents=True, exist_ok=True)
    calibrator = create_calibrator(
        model_path,
        None,
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[algorithm]),
        extra_options=_extra_options(algorithm, percentile),
    )
    reader = _OneBatchReader(batches, input_name=input_name, batch_size=batch_size, sample_shape=sample_shape)
    with contextlib.redirect_stdout(sys.stderr):  # ORT's histogram calibrators print progress
        while not reader.exhausted:
            calibrator.collect_data(reader)
        return calibrator.compute_data()


def ort_ranges(**kwargs: Any) -> dict[str, tuple[float, float]]:
    """[min, max] per tensor from ``collect_ranges`` (same keyword arguments)."""
    ranges: dict[str, tuple[float, float]] = {}
    for name, data in collect_ranges(**kwargs).items():
        low, high = data.range_value
        ranges[name] = (float(np.min(low)), float(np.max(high)))
    return ranges


def cpu_calibration_table(
    *,
    model_path: Path,
    batches: Batches,
    input_name: str,
    batch_size: int,
    sample_shape: Sequence[int],
    algorithm: api.CalibrationAlgorithm,
    percentile: float,
    tensorrt_version: int,
    header_algorithm: str,
    workdir: Path,
) -> CalibrationTable:
    """TensorRT's native calibration table for the installed (or named) version, computed without a GPU."""
    ranges = ort_ranges(
        model_path=model_path, batches=batches, input_name=input_name, batch_size=batch_size,
        sample_shape=sample_shape, algorithm=algorithm, percentile=percentile, workdir=workdir,
    )
    return from_ranges(ranges, version=tensorrt_version, algorithm=header_algorithm)


def quantize_qdq_for_tensorrt(
    *,
    model_path: Path,
    output_path: Path,
    batches: Batches,
    input_name: str,
    batch_size: int,
    sample_shape: Sequence[int],
    algorithm: api.CalibrationAlgorithm,
    percentile: float,
    nodes_to_exclude: Sequence[str],
) -> Path:
    """ONNX Runtime's static Q/DQ quantization with the settings TensorRT's explicit quantization requires.

    TensorRT takes INT8 Q/DQ with zero point 0 (symmetric activations and
    weights), per-channel weights on the output-channel axis, and float biases
    (ONNX Runtime would otherwise dequantize int32 biases, which TensorRT's Q/DQ
    does not take); nodes pinned to higher precision are left without Q/DQ.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    output_path.parent.mkdir(parents=True, exist_ok=True)
    ranges = collect_ranges(
        model_path=model_path, batches=batches, input_name=input_name, batch_size=batch_size,
        sample_shape=sample_shape, algorithm=algorithm, percentile=percentile, workdir=output_path.parent / "qdq-calibration",
    )
    ranges_path = output_path.with_suffix(".ranges.json")
    save_tensors_data(ranges, ranges_path)
    quantize_static(
        str(model_path),
        str(output_path),
        None,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[algorithm]),
        calibration_cache_path=str(ranges_path),
        nodes_to_exclude=list(nodes_to_exclude),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    return output_path
