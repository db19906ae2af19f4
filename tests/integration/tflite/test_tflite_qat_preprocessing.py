"""tflite-qat on models as people write them: preprocessing layers first (Rescaling, Normalization, Resizing,
CenterCrop after a RandomFlip), real TF + tfmot, trained on Fashion-MNIST, through the worker pipeline.

Accuracy bound (``QAT_BOUND``, FP32 minus QAT full-INT8 top-1 on 500 test images): the QAT model starts from
the trained FP32 weights and fine-tunes for one epoch on 3000 images at learning rate 1e-4, so the drop has
three parts: the int8 rounding itself (the PTQ bound on the same kind of CNN is 2 points, test_tflite_methods),
the fine-tune moving a model trained for two epochs on 20000 images (far from
converged, so a short fine-tune on a subset shifts test accuracy by a point or two either way; fit shuffles
unseeded), and the evaluation noise of 500 images (binomial standard error at 85 % is 1.6 points).
5 points covers int8 rounding plus about two standard errors. Measured over 3 runs: -1.6 to +0.6 points
(QAT mostly gains; per model in docs/tflite.md), so the bound also catches a broken quantization of the layer.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.api.exitcodes import ExitCode
from edgequant.worker.progress import SilentProgress
from edgequant.worker.runner import run_job

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".cache" / "test-models"
QAT_BOUND = 0.05
TRAIN_SAMPLES = 20_000
EPOCHS = 2

#: kind -> (preprocessing layers in front of the CNN, what the model takes: "pixels" 0-255 or "unit" [0, 1]).
KINDS: dict[str, str] = {"rescaling": "pixels", "normalization": "pixels", "resizing": "unit", "center-crop": "unit"}


def _preprocessing(kind: str, keras: Any, train_x: np.ndarray) -> list[Any]:
    L = keras.layers
    if kind == "rescaling":
        return [L.Rescaling(1 / 255, name="to_unit")]
    if kind == "normalization":
        norm = L.Normalization(axis=-1, name="standardize")
        norm.adapt(train_x[:2000])
        return [norm]
    if kind == "resizing":
        return [L.Resizing(32, 32, interpolation="bilinear", name="upsize")]
    return [L.RandomFlip("horizontal", seed=0, name="flip"), L.CenterCrop(24, 24, name="crop")]


def _build_and_train(kind: str, x: np.ndarray, y: np.ndarray, path: Path) -> None:
    """A small seeded CNN with the preprocessing first, trained on the images as the model takes them."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            *_preprocessing(kind, keras, x),
            L.Conv2D(16, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Conv2D(32, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(64, activation="relu"),
            L.Dense(10),
        ],
        name=f"fmnist_{kind.replace('-', '_')}",
    )
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    model.fit(x, y, epochs=EPOCHS, batch_size=64, verbose=0)
    model.save(path)


@pytest.fixture(scope="session")
def preprocessing_cnn(fashion_mnist: Any) -> Callable[[str], Path]:
    """kind -> the trained model file, cached under .cache/ keyed by the code and settings that made it."""
    import keras

    def get(kind: str) -> Path:
        key = "|".join(
            [
                inspect.getsource(_preprocessing),
                inspect.getsource(_build_and_train),
                kind,
                str(TRAIN_SAMPLES),
                str(EPOCHS),
                keras.__version__,
            ]
        )
        path = CACHE / f"qat-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.keras"
        if not path.exists():
            x = fashion_mnist.train_x[-TRAIN_SAMPLES:, :, :, None].astype(np.float32)
            if KINDS[kind] == "unit":
                x = x / np.float32(255)
            CACHE.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
            _build_and_train(kind, x, fashion_mnist.train_y[-TRAIN_SAMPLES:], tmp)
            tmp.replace(path)
        return path

    return get


def _uri(path: Path, folder: bool = False) -> str:
    return f"file://{path}" + ("/" if folder else "")


def _qat_job(
    kind: str, model: Path, fmnist_files: dict[str, Path], spec_for: Callable[..., dict[str, Any]], tmp_path: Path
) -> tuple[Any, dict[str, Any]]:
    spec = spec_for(
        "tflite-qat",
        model=_uri(model),
        out=_uri(tmp_path / "out", folder=True),
        evaluation=_uri(fmnist_files["test"], folder=True),
        calibration=_uri(fmnist_files["calibration"], folder=True),
        training=_uri(fmnist_files["train.npz"]),
        acceptance={"maxAccuracyDrop": QAT_BOUND},
        mixedPrecision={"sensitivity": "off"},
    )
    if KINDS[kind] == "pixels":
        spec["model"]["input"]["scaling"] = {"scale": 1.0}  # the model divides by itself
    result, _ = run_job(
        api.QuantizationJobSpec.model_validate(spec), workdir=tmp_path / "work", progress=SilentProgress()
    )
    return result, json.loads((tmp_path / "out" / "report.json").read_text())


def _note_on(report: dict[str, Any], layer: str) -> str:
    found = [n for n in report["notes"] if n.startswith(f"QAT: {layer} (")]
    assert len(found) == 1, report["notes"]
    return found[0]


#: kind -> {layer name: words its note must hold}.
EXPECTED_NOTES = {
    "rescaling": {"to_unit": "(Rescaling: x * 0.00392157 + 0) kept in the model"},
    "normalization": {"standardize": "(Normalization: (x - mean) / std as the per-channel affine x * "},
    "resizing": {"upsize": "(Resizing: bilinear resize to 32x32) kept in the model"},
    "center-crop": {
        "crop": "(CenterCrop: center crop to 24x24) kept in the model",
        "flip": "(RandomFlip) left out of the QAT model and the artifact",
    },
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_qat_keeps_the_preprocessing_layer_and_stays_within_the_bound(
    kind: str,
    preprocessing_cnn: Callable[[str], Path],
    fmnist_files: dict[str, Path],
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    result, report = _qat_job(kind, preprocessing_cnn(kind), fmnist_files, spec_for, tmp_path)
    assert result.exit_code == 0, result.message
    res = result.results
    assert res.baseline.accuracy > 0.75, "the cached model should be trained"
    assert res.accuracy_drop <= QAT_BOUND, (
        f"{kind}: FP32 {res.baseline.accuracy:.3f}, QAT int8 {res.quantized.accuracy:.3f}"
    )
    for layer, words in EXPECTED_NOTES[kind].items():
        assert words in _note_on(report, layer)

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=res.artifact.uri.removeprefix("file://"))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    # Full INT8 with the spec's input unchanged: 28x28x1 pixels (the resize/crop/scaling happen inside),
    # fed as the uint8 pixels 0-255 as they are, whichever scaling the spec declares.
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    assert list(inp["shape"]) == [1, 28, 28, 1] and res.input_contract.shape == [1, 28, 28, 1]
    expected_scale = 1.0 if KINDS[kind] == "pixels" else 1 / 255
    assert inp["quantization"][0] == pytest.approx(expected_scale, rel=1e-3) and inp["quantization"][1] == 0
    assert "feed the uint8 pixels 0-255 as they are" in res.input_contract.preprocessing


def test_rebuilt_preprocessing_computes_what_keras3_computes(tmp_path: Path) -> None:
    """Every supported layer and option, Keras 3 -> tf_keras, on random pixels: same outputs (float rounding only)."""
    from edgequant.backends.tflite.legacy_keras import to_tf_keras
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    L = keras.layers
    x = np.random.default_rng(0).uniform(0, 255, size=(8, 28, 28, 3)).astype(np.float32)
    adapted = L.Normalization(axis=-1)
    adapted.adapt(x)
    cases = {
        "rescaling": [L.Rescaling(1 / 127.5, offset=-1)],
        "normalization-given": [L.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 2500.0, 1600.0])],
        "normalization-adapted": [adapted],
        "normalization-invert": [
            L.Rescaling(1 / 255),
            L.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.05, 0.06], invert=True),
        ],
        "resizing-bilinear": [L.Resizing(32, 36)],
        "resizing-nearest-crop": [L.Resizing(20, 24, interpolation="nearest", crop_to_aspect_ratio=True)],
        "flip-rotate-center-crop": [L.RandomFlip(), L.RandomRotation(0.1), L.CenterCrop(24, 24)],
    }
    for name, front in cases.items():
        if name.startswith("flip"):  # functional, so the left-out layers' outputs are rewired from inbound nodes
            inputs = keras.Input((28, 28, 3))
            h = inputs
            for layer in front:
                h = layer(h)
            model = keras.Model(inputs, L.Dense(10)(L.Flatten()(L.Conv2D(4, 3)(h))))
        else:
            model = keras.Sequential([keras.Input((28, 28, 3)), *front, L.Conv2D(4, 3), L.Flatten(), L.Dense(10)])
        path = tmp_path / f"{name}.keras"
        model.save(path)
        model = keras.models.load_model(path)
        rebuilt = to_tf_keras(model)
        expected = np.asarray(model(x, training=False))
        got = np.asarray(rebuilt.model(x, training=False))
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()), name
        assert len(rebuilt.preprocessing) == sum(
            type(layer).__name__ not in ("RandomFlip", "RandomRotation") for layer in front
        ), name


#: model -> what the InvalidInput message must name: the layer, and the fix. A custom layer is refused before any
#: loader runs (model code never executes: backends/tflite/model_safety.py), so QAT never sees it.
UNSUPPORTED = {
    "custom-layer": ("the model contains the custom object", "SquarePlusOne", "model.export('dir/')"),
    "batchnorm-after-activation": (
        "layer 'bn_after_relu' (BatchNormalization) cannot be wrapped for QAT by tensorflow-model-optimization",
        "rebuild the model without this layer",
        "use tflite-int8",
    ),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_layer_fails_naming_the_layer_and_the_fix(
    case: str,
    fmnist_files: dict[str, Path],
    spec_for: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    from edgequant.backends.tflite.tf import import_keras

    keras = import_keras()
    L = keras.layers
    if case == "custom-layer":

        @keras.saving.register_keras_serializable(package="edgequant_tests")
        class SquarePlusOne(keras.layers.Layer):  # a layer tfmot and tf_keras know nothing about
            def call(self, inputs: Any) -> Any:
                return inputs * inputs + 1.0

        middle = [SquarePlusOne(name="square_plus_one"), L.Conv2D(4, 3, activation="relu")]
    else:  # tfmot folds Conv -> BatchNormalization -> ReLU, not BatchNormalization after an activated Conv
        middle = [L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(name="bn_after_relu")]
    model = keras.Sequential([keras.Input((28, 28, 1)), L.Rescaling(1 / 255), *middle, L.Flatten(), L.Dense(10)])
    path = tmp_path / f"{case}.keras"
    model.save(path)
    spec = spec_for(
        "tflite-qat",
        model=_uri(path),
        out=_uri(tmp_path / "out", folder=True),
        calibration=_uri(fmnist_files["calibration"], folder=True),
        training=_uri(fmnist_files["train.npz"]),
        mixedPrecision={"sensitivity": "off"},
    )
    spec["model"]["input"]["scaling"] = {"scale": 1.0}
    result, _ = run_job(
        api.QuantizationJobSpec.model_validate(spec), workdir=tmp_path / "work", progress=SilentProgress()
    )
    assert result.exit_code == ExitCode.INVALID_INPUT, result.message
    assert all(part in result.message for part in UNSUPPORTED[case]), result.message
