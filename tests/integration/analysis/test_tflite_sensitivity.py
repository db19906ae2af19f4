"""TFLite: exhaustive and fast sensitivity on real Fashion-MNIST CNNs, layers kept in float, named as in Keras."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.analysis.sensitivity import combine, exhaustive_sensitivity, fast_sensitivity

pytestmark = pytest.mark.integration

KERAS_LAYERS = ["conv1", "pool1", "conv2", "pool2", "conv3", "fc1", "logits"]


@pytest.fixture
def fp32_accuracy(
    score: Callable[..., float], source_model: Callable[[Path], Any], fashion: Any, tmp_path: Path
) -> Callable[[Path], float]:
    from edgequant.backends.tflite import convert as conv

    def measure(model: Path) -> float:
        path = tmp_path / f"{model.stem}.fp32.tflite"
        path.write_bytes(conv.convert_source(source_model(model), method=None))
        return score(path, fashion.eval_x, fashion.eval_y)

    return measure


def test_layers_carry_the_keras_names(healthy_cnn: Path, tflite_layers: Callable[..., Any], fashion: Any) -> None:
    layers = tflite_layers(healthy_cnn, fashion.cal_x)
    assert layers.layers == KERAS_LAYERS


def test_both_modes_rank_the_deliberately_sensitive_layer_first(
    sensitive_cnn: Path,
    tflite_layers: Callable[..., Any],
    score: Callable[..., float],
    fp32_accuracy: Callable[[Path], float],
    fashion: Any,
) -> None:
    layers = tflite_layers(sensitive_cnn, fashion.cal_x)
    reference = fp32_accuracy(sensitive_cnn)
    exhaustive = exhaustive_sensitivity(
        layers=layers.layers,
        reference_accuracy=reference,
        threshold=0.005,
        accuracy_with_only=lambda layer: score(layers.model_with_only(layer), fashion.eval_x, fashion.eval_y),
    )
    fast = fast_sensitivity(probes=layers.probe([fashion.cal_x], max_samples=256), threshold=0.005, seconds=0.0)
    report = combine(exhaustive=exhaustive, fast=fast)

    assert report.layers[0].layer == "conv2" and report.layers[0].flagged
    assert report.layers[0].accuracy_delta is not None and report.layers[0].accuracy_delta > 0.2
    assert fast.layers[0].layer == "conv2" and fast.layers[0].flagged
    assert {e.layer for e in exhaustive.layers} == set(KERAS_LAYERS) == {e.layer for e in fast.layers}
    # every other layer costs far less than conv2 alone
    assert all(e.accuracy_delta < report.layers[0].accuracy_delta / 10 for e in report.layers[1:])
    assert (
        report.agreement is not None and report.agreement.exhaustive_top[0] == report.agreement.fast_top[0] == "conv2"
    )


def test_healthy_model_flags_nothing_in_fast_mode(
    healthy_cnn: Path, tflite_layers: Callable[..., Any], fashion: Any
) -> None:
    layers = tflite_layers(healthy_cnn, fashion.cal_x)
    fast = fast_sensitivity(probes=layers.probe([fashion.cal_x], max_samples=128), threshold=0.005, seconds=0.0)
    assert fast.flagged == []
    assert all(e.sqnr_db is not None and e.sqnr_db > 25 for e in fast.layers)


def test_keeping_a_layer_in_float_keeps_uint8_io_and_recovers_accuracy(
    sensitive_cnn: Path,
    tflite_layers: Callable[..., Any],
    score: Callable[..., float],
    fp32_accuracy: Callable[[Path], float],
    fashion: Any,
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    layers = tflite_layers(sensitive_cnn, fashion.cal_x)
    plain = layers.model_keeping_float([])
    mixed = layers.model_keeping_float(["conv2"])
    for path in (plain, mixed):
        interpreter = Interpreter(model_path=str(path))
        assert interpreter.get_input_details()[0]["dtype"] == np.uint8
        assert interpreter.get_output_details()[0]["dtype"] == np.uint8

    def conv_weight_dtypes(path: Path) -> list[str]:
        interpreter = Interpreter(model_path=str(path))
        return [
            np.dtype(interpreter._get_tensor_details(int(op["inputs"][1]), 0)["dtype"]).name
            for op in interpreter._get_ops_details()
            if op["op_name"] == "CONV_2D"
        ]

    assert conv_weight_dtypes(plain) == ["int8", "int8", "int8"]
    assert conv_weight_dtypes(mixed) == ["int8", "float32", "int8"]
    reference = fp32_accuracy(sensitive_cnn)
    assert score(plain, fashion.eval_x, fashion.eval_y) < reference - 0.2
    assert score(mixed, fashion.eval_x, fashion.eval_y) > reference - 0.02
    assert mixed.stat().st_size > plain.stat().st_size
    with pytest.raises(KeyError, match="quantizable layers are"):
        layers.model_keeping_float(["conv9"])
