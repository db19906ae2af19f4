"""TFLiteConverter settings for each method, in one table-like function."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends.tflite.tf import import_tf
from edgequant.util.errors import InvalidInputError

#: None = plain FP32 conversion (the baseline).
RepresentativeData = Callable[[], Iterator[list[np.ndarray]]]


class ConversionError(InvalidInputError):
    """TFLiteConverter refused the model for this method."""


_FIXES: dict[api.Method | None, str] = {
    api.Method.TFLITE_INT8: "the model has ops without int8 kernels: try tflite-dynamic-range or tflite-float16, or pin layers with mixedPrecision",
    api.Method.TFLITE_QAT: "check that every layer is supported by tensorflow-model-optimization",
}


def representative_from(batches: Any, *, limit: int | None = None) -> RepresentativeData:
    """One sample per step, as TFLite's calibrator expects: ``[array[1, ...]]``."""

    def gen() -> Iterator[list[np.ndarray]]:
        n = 0
        for batch, _labels in batches:
            for sample in batch:
                if limit is not None and n >= limit:
                    return
                n += 1
                yield [sample[None].astype(np.float32)]

    return gen


def configure(converter: Any, *, method: api.Method | None, representative: RepresentativeData | None) -> None:
    """Set the converter up for ``method`` (None: FP32)."""
    tf = import_tf()
    if method is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if method is api.Method.TFLITE_FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    elif method in (api.Method.TFLITE_INT8, api.Method.TFLITE_QAT):
        if representative is None:
            raise ConversionError(
                f"{method.value}: uint8 input/output needs representative data: add calibration.dataset"
            )
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif method is not api.Method.TFLITE_DYNAMIC_RANGE:
        raise ConversionError(f"{method.value} is not a TFLite method")


def convert_saved_model(
    saved_model_dir: Path, *, method: api.Method | None, representative: RepresentativeData | None = None
) -> bytes:
    """Convert a SavedModel folder for ``method`` (None: FP32)."""
    converter = import_tf().lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    configure(converter, method=method, representative=representative)
    return run_converter(converter, method)


def convert_source(
    source: Any, *, method: api.Method | None, representative: RepresentativeData | None = None
) -> bytes:
    """Convert a ``source.SourceModel`` for ``method`` (None: FP32)."""
    converter = source.converter()
    configure(converter, method=method, representative=representative)
    return run_converter(converter, method)


def run_converter(converter: Any, method: api.Method | None) -> bytes:
    try:
        # from_keras_model exports a SavedModel first and Keras prints "Saved artifact at ..." to stdout,
        # where `edgequant run` prints its table and the worker its result: keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except ConversionError:
        raise
    except Exception as exc:
        raise conversion_error(exc, method) from exc


def conversion_error(exc: Exception, method: api.Method | None) -> ConversionError:
    """The converter's failure as a ConversionError: its first error line and the fix for ``method``."""
    if isinstance(exc, ConversionError):
        return exc
    lines = (
        [line for line in str(exc).splitlines() if "error" in line.lower()]
        or str(exc).splitlines()
        or [type(exc).__name__]
    )
    name = method.value if method else "fp32"
    return ConversionError(
        f"TFLite conversion ({name}) failed: {lines[0].strip()[:400]} ({_FIXES.get(method, 'see the converter message')})"
    )
