"""spec.ptq on the tflite-int8 path: bias correction on real Keras weights and real data, through the worker too."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api.exitcodes import ExitCode

pytestmark = pytest.mark.integration


def _calibration(fashion_mnist: Any, samples: int = 300) -> np.ndarray:
    return (fashion_mnist.train_x[-samples:, ..., None] / np.float32(255)).astype(np.float32)


def _with_quantized_kernels(model: Any) -> Any:
    """``model`` with every Conv/Dense kernel replaced by TFLite's int8 weights (folded BatchNorm factors ignored:
    per-channel symmetric quantization commutes with them), the float stand-in for what the converter ships."""
    from edgequant.analysis import post_training as pt
    from edgequant.backends.tflite import ptq
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for layer in clone.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense"):
            weights = layer.get_weights()
            onnx_layout, _ = ptq.keras_weight_as_onnx(kind, weights[0])
            quantized = pt.quantize_weights_symmetric(onnx_layout, qmax=127, per_channel=True)
            weights[0] = quantized.T if kind == "Dense" else quantized.transpose(2, 3, 1, 0)
            layer.set_weights(weights)
    return clone


def test_bias_correction_cancels_the_first_layers_mean_shift(trained_cnn: Path, fashion_mnist: Any) -> None:
    from edgequant.backends.tflite import ptq
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    model = keras.models.load_model(str(trained_cnn), compile=False)
    x = _calibration(fashion_mnist)
    plan = ptq.plan_bias_correction(model)
    assert [(t.kind, t.batch_norm) for t in plan.targets] == [
        ("Conv2D", True),
        ("Conv2D", True),
        ("Dense", False),
        ("Dense", False),
    ]
    means = ptq.input_means(model, [t.layer for t in plan.targets], iter([x[:150], x[150:]]))
    np.testing.assert_allclose(means[plan.targets[0].layer], [x.mean()], rtol=1e-5)
    corrected, changed = ptq.bias_corrected(model, plan, means)
    assert changed == 4

    first_bn = plan.targets[0].target

    def bn_means(m: Any) -> np.ndarray:
        probe = keras.Model(m.inputs, m.get_layer(first_bn).output)
        return np.asarray(probe.predict_on_batch(x)).mean(axis=(0, 1, 2))

    reference = bn_means(model)
    shift_before = np.abs(bn_means(_with_quantized_kernels(model)) - reference).max()
    shift_after = np.abs(bn_means(_with_quantized_kernels(corrected)) - reference).max()
    # exact but for the zero border of 'same' padding (Fashion-MNIST's borders are near black anyway)
    assert shift_before > 0 and shift_after <= 0.05 * shift_before, (shift_before, shift_after)


def test_the_worker_reports_the_held_out_choice(
    trained_cnn: Path, fmnist_files: dict[str, Path], spec_for: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    from edgequant.worker.progress import SilentProgress
    from edgequant.worker.runner import run_job, spec_from_document

    spec = spec_for(
        "tflite-int8",
        model=trained_cnn.as_uri(),
        out=(tmp_path / "out").as_uri() + "/",
        calibration=fmnist_files["calibration"].as_uri() + "/",
        evaluation=fmnist_files["test.npz"].as_uri(),
        mixedPrecision={"sensitivity": "off"},
    )
    result, _ctx = run_job(spec_from_document(spec)[0], workdir=tmp_path / "work", progress=SilentProgress())
    assert result.exit_code == ExitCode.SUCCESS, result.message
    notes = json.loads((tmp_path / "out" / "report.json").read_text())["notes"]
    (held_out,) = [n for n in notes if n.startswith("ptq: held-out top-1 agreement with FP32 on 60 calibration")]
    assert "converter " in held_out and "bias correction " in held_out and "(ranges from the other 240)" in held_out
    # off is the converter alone: no ptq note
    spec["ptq"] = {"biasCorrection": "off"}
    spec["output"]["uri"] = (tmp_path / "off").as_uri() + "/"
    result, _ctx = run_job(spec_from_document(spec)[0], workdir=tmp_path / "work-off", progress=SilentProgress())
    assert result.exit_code == ExitCode.SUCCESS, result.message
    notes = json.loads((tmp_path / "off" / "report.json").read_text())["notes"]
    assert not [n for n in notes if n.startswith("ptq:")]
