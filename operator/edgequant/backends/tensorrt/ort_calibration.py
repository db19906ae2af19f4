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
from edgequant.backends.tensorrt.calibrator import batch_count, fixed_batches


def _tensorrt_settings(algorithm: api.CalibrationAlgorithm, percentile: float) -> Any:
    """The ONNX Runtime backend's static settings for what TensorRT takes: symmetric INT8 (zero point 0), per-channel weights."""
    from edgequant.backends.onnxruntime import StaticSettings

    return StaticSettings(
        algorithm=algorithm,
        percentile=percentile,
        per_channel=True,
        reduce_range=False,
        weight_type=api.OnnxQuantType.INT8,
        activation_type=api.OnnxQuantType.INT8,
        symmetric_activations=True,
        symmetric_weights=True,
        preprocess=False,  # keep the node names sensitivity rankings and pins use; TensorRT fuses on its own
    )


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
    """ONNX Runtime's TensorsData for every float tensor (ONNX tensor names = TensorRT tensor names), on the CPU.

    The ONNX Runtime backend's ``calibrate`` (one batch per collect_data call)
    is fed the padded batches, so the manifest describes what was read.
    """
    from edgequant.backends.onnxruntime import calibrate

    count = batch_count(batches.count, batch_size) * batch_size

    def padded() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in fixed_batches((x for x, _ in batches), batch_size=batch_size, sample_shape=sample_shape):
            yield batch.data, np.zeros(len(batch.data), dtype=np.int64)

    return calibrate(
        model_path=model_path,
        batches=Batches(make_iter=padded, count=count, batch_size=batch_size),
        input_name=input_name,
        fixed_batch=batch_size,
        settings=_tensorrt_settings(algorithm, percentile),
        workdir=workdir,
    )


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
        model_path=model_path,
        batches=batches,
        input_name=input_name,
        batch_size=batch_size,
        sample_shape=sample_shape,
        algorithm=algorithm,
        percentile=percentile,
        workdir=workdir,
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
    weights), per-channel weights on the output-channel axis, and float biases:
    ONNX Runtime's default int32 bias DequantizeLinear is refused by TensorRT's
    parser ("only activation types allowed as input to this layer",
    onnx/onnx-tensorrt#850, microsoft/onnxruntime#14229), and the ONNX Runtime
    backend's ``quantize_qdq`` has no switch for it, hence ``quantize_static``
    here with ``QuantizeBias: False`` on ranges from the shared ``calibrate``.
    Nodes pinned to higher precision are left without Q/DQ.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    from edgequant.backends.onnxruntime import ORT_METHOD

    output_path.parent.mkdir(parents=True, exist_ok=True)
    ranges = collect_ranges(
        model_path=model_path,
        batches=batches,
        input_name=input_name,
        batch_size=batch_size,
        sample_shape=sample_shape,
        algorithm=algorithm,
        percentile=percentile,
        workdir=output_path.parent / "qdq-calibration",
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
        calibrate_method=ORT_METHOD[algorithm],
        calibration_cache_path=str(ranges_path),
        nodes_to_exclude=list(nodes_to_exclude),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    return output_path
