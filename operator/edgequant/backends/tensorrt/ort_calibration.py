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


def _reader(batches: Batches, *, input_name: str, batch_size: int, sample_shape: Sequence[int]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class FixedBatchReader(CalibrationDataReader):  # type: ignore[misc]
        """Hands ONNX Runtime the padded calibration batches, once."""

        def __init__(self) -> None:
            self._iter: Iterator[Any] = fixed_batches(
                (x for x, _ in batches), batch_size=batch_size, sample_shape=sample_shape
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._iter, None)
            return None if batch is None else {input_name: batch.data}

    return FixedBatchReader()


def _extra_options(algorithm: api.CalibrationAlgorithm, percentile: float) -> dict[str, Any]:
    # Symmetric ranges: TensorRT's INT8 is symmetric (zero point 0).
    options: dict[str, Any] = {"symmetric": True}
    if algorithm is api.CalibrationAlgorithm.PERCENTILE:
        options["percentile"] = percentile
    return options


def ort_ranges(
    *,
    model_path: Path,
    batches: Batches,
    input_name: str,
    batch_size: int,
    sample_shape: Sequence[int],
    algorithm: api.CalibrationAlgorithm,
    percentile: float,
    workdir: Path,
) -> dict[str, tuple[float, float]]:
    """[min, max] of every float activation (ONNX tensor names = TensorRT tensor names), from ONNX Runtime on the CPU."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    workdir.mkdir(parents=True, exist_ok=True)
    calibrator = create_calibrator(
        model_path,
        None,
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[algorithm]),
        extra_options=_extra_options(algorithm, percentile),
    )
    calibrator.collect_data(_reader(batches, input_name=input_name, batch_size=batch_size, sample_shape=sample_shape))
    ranges: dict[str, tuple[float, float]] = {}
    for name, data in calibrator.compute_data().items():
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

    output_path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    if algorithm is api.CalibrationAlgorithm.PERCENTILE:
        extra["CalibPercentile"] = percentile
    quantize_static(
        str(model_path),
        str(output_path),
        _reader(batches, input_name=input_name, batch_size=batch_size, sample_shape=sample_shape),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=getattr(CalibrationMethod, _ORT_METHODS[algorithm]),
        nodes_to_exclude=list(nodes_to_exclude),
        extra_options=extra,
    )
    return output_path
