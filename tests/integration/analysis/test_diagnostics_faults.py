"""Each diagnostic fires on its injected fault and stays quiet on a healthy model (real TFLite models and data)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.analysis import diagnostics as dg
from edgequant.api import v1alpha1 as api
from edgequant.worker.stages.analysis import feeder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spec() -> api.QuantizationJobSpec:
    return api.QuantizationJobSpec.model_validate(
        {
            "model": {"uri": "file:///m.keras", "input": {"shape": [28, 28, 1], "colorOrder": "GRAY"}},
            "method": "tflite-int8",
            "calibration": {"dataset": {"uri": "file:///cal/"}},
            "evaluation": {"dataset": {"uri": "file:///eval/"}},
            "output": {"uri": "file:///out/"},
        }
    )


@pytest.fixture
def fp32(healthy_cnn: Path, source_model: Callable[[Path], Any], tmp_path: Path) -> Any:
    from edgequant.backends.tflite import convert as conv
    from edgequant.backends.tflite.predictor import TFLitePredictor

    path = tmp_path / "fp32.tflite"
    path.write_bytes(conv.convert_source(source_model(healthy_cnn), method=None))
    return TFLitePredictor(path)


def _fired(report: dg.DiagnosticsReport) -> set[str]:
    return {f.check for f in report.fired}


def _diagnose(
    spec: api.QuantizationJobSpec, fashion: Any, fp32: Any, predict_quantized: Callable[[np.ndarray], np.ndarray]
) -> dg.DiagnosticsReport:
    return dg.diagnose(
        spec=spec,
        inputs=fashion.eval_x[:512],
        labels=fashion.eval_y[:512],
        predict_fp32=feeder(fp32),
        predict_quantized=predict_quantized,
    )


def test_healthy_int8_model_is_quiet(
    spec: Any, healthy_cnn: Path, tflite_layers: Callable[..., Any], fashion: Any, fp32: Any
) -> None:
    from edgequant.backends.tflite.predictor import TFLitePredictor

    quant = TFLitePredictor(tflite_layers(healthy_cnn, fashion.cal_x).model_keeping_float([]))
    report = _diagnose(spec, fashion, fp32, feeder(quant))
    assert len(report.findings) == 7 and _fired(report) == set(), [f.message for f in report.fired]
    assert (
        report.outputs is not None
        and report.outputs.sqnr_db > dg.MISMATCH_SQNR_DB
        and report.outputs.top1_agreement > 0.95
    )


def test_noise_calibration_makes_outputs_diverge(
    spec: Any, healthy_cnn: Path, tflite_layers: Callable[..., Any], fashion: Any, fp32: Any
) -> None:
    from edgequant.backends.tflite.predictor import TFLitePredictor

    noise = np.random.default_rng(0).uniform(0, 1, fashion.cal_x.shape).astype(np.float32)
    quant = TFLitePredictor(tflite_layers(healthy_cnn, noise).model_keeping_float([]))
    report = _diagnose(spec, fashion, fp32, feeder(quant))
    assert "output-mismatch" in _fired(report)
    mismatch = next(f for f in report.findings if f.check == "output-mismatch")
    assert mismatch.fixes[0].startswith("use more diverse calibration data")
    assert "preprocessing-mismatch" not in _fired(report)


def test_float_over_255_fed_to_uint8_is_found_by_rescoring(
    spec: Any, healthy_cnn: Path, tflite_layers: Callable[..., Any], fashion: Any, fp32: Any
) -> None:
    from edgequant.backends.tflite.predictor import TFLitePredictor

    quant = TFLitePredictor(tflite_layers(healthy_cnn, fashion.cal_x).model_keeping_float([]))
    assert quant.input.dtype == "uint8"

    def fed_float_over_255(x: np.ndarray) -> np.ndarray:  # the classic bug: 0-1 floats cast straight to uint8
        return quant.predict(np.clip(x, 0, 255).astype(np.uint8))

    report = _diagnose(spec, fashion, fp32, fed_float_over_255)
    fired = _fired(report)
    assert "preprocessing-mismatch" in fired and "output-collapsed" in fired
    pre = [f for f in report.findings if f.check == "preprocessing-mismatch"]
    assert not pre[0].fired and pre[1].fired  # the FP32 model is fine; the quantized one is fed wrong
    assert pre[1].evidence["alternativeAccuracy"] > pre[1].evidence["accuracy"] + 0.3
    assert "uint8 0-255" in pre[1].fixes[0]


def test_a_clipped_output_range_is_detected(
    spec: Any, healthy_cnn: Path, tflite_layers: Callable[..., Any], fashion: Any, fp32: Any, tmp_path: Path
) -> None:
    from tensorflow.lite.tools import flatbuffer_utils

    from edgequant.backends.tflite import layers as tl
    from edgequant.backends.tflite.predictor import TFLitePredictor

    layers = tflite_layers(healthy_cnn, fashion.cal_x)
    model = flatbuffer_utils.convert_bytearray_to_object(layers.calibrated)
    graph = model.subgraphs[0]
    logits = graph.tensors[graph.outputs[0]].quantization
    assert logits.max[0] - logits.min[0] > 10  # the calibrated logits span ~[-17, 13]
    logits.min, logits.max = np.array([-1.5], np.float32), np.array([1.5], np.float32)  # inject: clip the range
    path = tmp_path / "clipped.tflite"
    path.write_bytes(tl.quantize_calibrated(bytes(flatbuffer_utils.convert_object_to_bytearray(model))))
    report = _diagnose(spec, fashion, fp32, feeder(TFLitePredictor(path)))
    assert "output-clipped" in _fired(report)
    clipped = next(f for f in report.findings if f.check == "output-clipped")
    assert clipped.evidence["rangeCovered"] < 0.2 and clipped.evidence["saturatedShare"] > 0.3
