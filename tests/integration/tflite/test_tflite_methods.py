"""The four TFLite workflows through the worker pipeline on real data: size ratios, uint8 I/O, accuracy bounds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.backend_options import backend_options
from edgequant.api.exitcodes import ExitCode
from edgequant.storage import sha256_file
from edgequant.worker.progress import SilentProgress
from edgequant.worker.runner import run_job

pytestmark = pytest.mark.integration

#: FP32 minus quantized top-1 accuracy allowed per method on the trained CNN (500 test images).
ACCURACY_BOUND = {
    "tflite-dynamic-range": 0.01,
    "tflite-float16": 0.004,
    "tflite-int8": 0.02,
    "tflite-qat": 0.02,
}
#: Smallest FP32-TFLite / artifact size ratio per method on a model whose weights dominate the file.
MIN_RATIO = {"tflite-dynamic-range": 3.5, "tflite-float16": 1.9, "tflite-int8": 3.5, "tflite-qat": 3.5}


def _run(spec: dict[str, Any], workdir: Path) -> tuple[Any, Any]:
    return run_job(api.QuantizationJobSpec.model_validate(spec), workdir=workdir, progress=SilentProgress())


def _uri(path: Path, folder: bool = False) -> str:
    return f"file://{path}" + ("/" if folder else "")


@pytest.mark.parametrize("method", list(MIN_RATIO))
def test_size_ratio_on_a_weight_dominated_model(
    method: str,
    dense_heavy: tuple[Path, int],
    fmnist_files: dict[str, Path],
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    model, params = dense_heavy
    assert params >= 1_000_000
    needs_data = method in ("tflite-int8", "tflite-qat")
    spec = spec_for(
        method,
        model=_uri(model),
        out=_uri(tmp_path / "out", folder=True),
        calibration=_uri(fmnist_files["calibration"], folder=True) if needs_data else None,
        training=_uri(fmnist_files["train.npz"]) if method == "tflite-qat" else None,
        mixedPrecision={"sensitivity": "off"},
    )
    result, ctx = _run(spec, tmp_path / "work")
    assert result.exit_code == 0, result.message
    ratio = result.results.compression_ratio
    assert ratio >= MIN_RATIO[method], f"{method}: {ratio:.2f}x"
    assert ratio == pytest.approx(ctx.baseline.size_bytes / ctx.quantized.size_bytes)


@pytest.mark.parametrize("method", list(ACCURACY_BOUND))
def test_trained_cnn_within_the_accuracy_bound(
    method: str,
    trained_cnn: Path,
    fmnist_files: dict[str, Path],
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    calibrated = method in ("tflite-int8", "tflite-qat")
    spec = spec_for(
        method,
        model=_uri(trained_cnn),
        out=_uri(tmp_path / "out", folder=True),
        evaluation=_uri(fmnist_files["test"], folder=True),
        calibration=_uri(fmnist_files["calibration"], folder=True) if calibrated else None,
        training=_uri(fmnist_files["train.npz"]) if method == "tflite-qat" else None,
        acceptance={"maxAccuracyDrop": ACCURACY_BOUND[method]},
    )
    result, _ctx = _run(spec, tmp_path / "work")
    assert result.exit_code == 0, result.message
    res = result.results
    assert res.baseline.accuracy > 0.75, "the cached CNN should be trained"
    assert res.accuracy_drop <= ACCURACY_BOUND[method]
    artifact = Path(res.artifact.uri.removeprefix("file://"))
    assert sha256_file(artifact) == res.artifact.sha256 and artifact.stat().st_size == res.artifact.size_bytes
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["outcome"]["succeeded"] and report["comparison"]["accuracyDrop"] == pytest.approx(res.accuracy_drop)
    assert report["quantized"]["evaluatedSamples"] == 500 and report["quantized"]["latencyMsMedian"] > 0

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    if calibrated:
        # Full INT8: uint8 in and out, the input scale maps pixels 0-255 one to one.
        assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
        scale, zero_point = inp["quantization"]
        assert scale == pytest.approx(1 / 255, rel=1e-3) and zero_point == 0
        assert res.input_contract.dtype == "uint8" and res.input_contract.value_range == [0.0, 255.0]
        assert "feed the uint8 pixels 0-255 as they are" in res.input_contract.preprocessing
        assert report["quantized"]["fedRange"] == [0.0, 255.0]
    else:
        assert inp["dtype"] == np.float32 and res.input_contract.value_range == [0.0, 1.0]


def test_float_over_255_into_the_int8_artifact_is_detected(
    trained_cnn: Path,
    fmnist_files: dict[str, Path],
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    from edgequant.backends.base import InputContractError
    from edgequant.backends.tflite.backend import TFLiteBackend
    from edgequant.data.datasets import index_dataset
    from edgequant.data.loader import prepare_set
    from edgequant.worker.evaluate import evaluate

    spec = spec_for(
        "tflite-int8",
        model=_uri(trained_cnn),
        out=_uri(tmp_path / "out", folder=True),
        calibration=_uri(fmnist_files["calibration"], folder=True),
        mixedPrecision={"sensitivity": "off"},
    )
    result, ctx = _run(spec, tmp_path / "work")
    assert result.exit_code == 0, result.message
    predictor = TFLiteBackend().load(ctx.artifact.path, options=backend_options(ctx.spec))
    test = prepare_set(
        index_dataset(fmnist_files["test.npz"], layout=api.DatasetLayout.NPZ, uri="file://test.npz"),
        name="evaluation",
        contract=ctx.spec.model.input,
        samples=200,
        seed=0,
    )
    # Right: the evaluator quantizes the [0, 1] floats with the model's own scale -> uint8 pixels.
    assert evaluate(predictor=predictor, data=test.batches(), latency_runs=0).top1 > 0.7
    # Wrong 1: float/255 handed straight to the uint8 model.
    x, _ = next(iter(test.batches()))
    with pytest.raises(InputContractError, match=r"float/255 fed to a full-INT8 model"):
        predictor.predict(x)
    # Wrong 2: data already divided by 255 goes through the model's scaling again -> only 0s and 1s arrive.
    twice = api.InputContract(
        shape=[28, 28, 1], color_order=api.ColorOrder.GRAY, scaling=api.Scaling(scale=1 / 255 / 255)
    )
    test.contract = twice
    with pytest.raises(InputContractError, match=r"every value it received lies in \[0, 1\]"):
        evaluate(predictor=predictor, data=test.batches(), latency_runs=0)


def test_savedmodel_and_h5_sources(
    trained_cnn: Path,
    fmnist_files: dict[str, Path],
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    model = keras.models.load_model(trained_cnn)
    saved = tmp_path / "cnn-savedmodel"
    model.export(str(saved), verbose=False)
    h5 = tmp_path / "cnn.h5"
    model.save(h5)
    for source, method in ((_uri(saved, folder=True), "tflite-int8"), (_uri(h5), "tflite-dynamic-range")):
        spec = spec_for(
            method,
            model=source,
            out=_uri(tmp_path / method, folder=True),
            evaluation=_uri(fmnist_files["test.npz"]),
            calibration=_uri(fmnist_files["calibration"], folder=True) if method == "tflite-int8" else None,
            acceptance={"maxAccuracyDrop": 0.02},
            mixedPrecision={"sensitivity": "off"},
        )
        result, _ = _run(spec, tmp_path / f"work-{method}")
        assert result.exit_code == 0, f"{source}: {result.message}"
        assert result.results.quantized.accuracy > 0.75


def test_shape_mismatch_names_the_field(
    trained_cnn: Path, spec_for: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    spec = spec_for("tflite-float16", model=_uri(trained_cnn), out=_uri(tmp_path / "out", folder=True))
    spec["model"]["input"] = {"shape": [32, 32, 3]}
    result, _ = _run(spec, tmp_path / "work")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "spec.model.input.shape is [32, 32, 3] (NHWC) but the model's input is [28, 28, 1]" in result.message
