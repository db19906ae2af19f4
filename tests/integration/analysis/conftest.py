"""Real Fashion-MNIST CNNs for the analysis tests, trained once and cached under .cache/ (keyed by the code that made them).

- ``fashion``: float32 [0, 1] NHWC splits: train (for training), calibration (500), evaluation (1000).
- ``healthy_cnn``: conv1-pool1-conv2-pool2-conv3-flat-fc1-logits, 2 epochs on 20k images.
- ``sensitive_cnn``: the same weights with conv2 made deliberately sensitive: conv1's channel 0 is
  silenced (zero weights, negative bias, so it is 0 after ReLU) and conv2's weights reading that channel
  are set to ``OUTLIER`` x its largest weight. The float function barely changes (the channel is dead),
  but conv2's per-channel weight scales are blown up, so 8-bit conv2 weights lose almost all resolution.
- ``doubly_sensitive_cnn``: ``sensitive_cnn`` with conv3 made fragile the same way (conv2's channel 0 silenced,
  conv3's weights reading it blown up). Pinning any one layer leaves the other 8-bit layer destroyed, so
  ladder tests that need "pinning one layer cannot meet the budget" hold by construction, on any CPU.
- ``rescaling_cnn``: a small CNN with a Rescaling(1/255) layer inside, trained on raw 0-255 pixels.
- ``tflite_layers(model_path, calibration)``: a calibrated ``TFLiteLayerAnalysis``.
- ``score(path, x, y)``: accuracy through the worker's one evaluator.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".cache" / "analysis-models"
OUTLIER = 200.0
TRAIN_SAMPLES = 20_000
EPOCHS = 2


@dataclass(frozen=True)
class Splits:
    train_x: np.ndarray
    train_y: np.ndarray
    cal_x: np.ndarray
    cal_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray


@pytest.fixture(scope="session")
def fashion(fashion_mnist: Any) -> Splits:
    def prep(images: np.ndarray) -> np.ndarray:
        return (images[..., None] / np.float32(255.0)).astype(np.float32)

    tx, ty = fashion_mnist.train_x, fashion_mnist.train_y
    return Splits(
        train_x=prep(tx[:TRAIN_SAMPLES]),
        train_y=ty[:TRAIN_SAMPLES],
        cal_x=prep(tx[TRAIN_SAMPLES : TRAIN_SAMPLES + 500]),
        cal_y=ty[TRAIN_SAMPLES : TRAIN_SAMPLES + 500],
        eval_x=prep(fashion_mnist.test_x[:1000]),
        eval_y=fashion_mnist.test_y[:1000],
    )


def _build_and_train(splits: Splits, path: Path) -> None:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(16, 3, activation="relu", name="conv1"),
            L.MaxPooling2D(name="pool1"),
            L.Conv2D(32, 3, activation="relu", name="conv2"),
            L.MaxPooling2D(name="pool2"),
            L.Conv2D(32, 3, activation="relu", name="conv3"),
            L.Flatten(name="flat"),
            L.Dense(64, activation="relu", name="fc1"),
            L.Dense(10, name="logits"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(splits.train_x, splits.train_y, epochs=EPOCHS, batch_size=64, verbose=0)
    model.save(path)


def _make_fragile(source: Path, path: Path, *, feeder: str, layer: str) -> None:
    """``feeder``'s output channel 0 is dead (zero weights, negative bias: 0 after ReLU) and ``layer``'s weights
    reading it are ``OUTLIER`` x its largest weight: the float function barely changes, 8-bit weights of
    ``layer`` lose almost all resolution."""
    import keras

    model = keras.models.load_model(source)
    w, b = model.get_layer(feeder).get_weights()
    w[..., 0], b[0] = 0.0, -1.0
    model.get_layer(feeder).set_weights([w, b])
    w, b = model.get_layer(layer).get_weights()
    w[:, :, 0, :] = OUTLIER * np.abs(w).max()
    model.get_layer(layer).set_weights([w, b])
    model.save(path)


def _cached(name: str, make: Callable[[Path], None], *keys: object) -> Path:
    makers = (_build_and_train, _make_fragile)
    digest = hashlib.sha256("|".join([*map(inspect.getsource, makers), *map(str, keys)]).encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.keras"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"tmp-{os.getpid()}-{path.name}")
        make(tmp)
        tmp.replace(path)
    return path


@pytest.fixture(scope="session")
def healthy_cnn(fashion: Splits) -> Path:
    return _cached("fashion-cnn", lambda p: _build_and_train(fashion, p), TRAIN_SAMPLES, EPOCHS)


@pytest.fixture(scope="session")
def sensitive_cnn(healthy_cnn: Path) -> Path:
    return _cached(
        "fashion-cnn-sensitive-conv2",
        lambda p: _make_fragile(healthy_cnn, p, feeder="conv1", layer="conv2"),
        healthy_cnn.name,
        OUTLIER,
    )


@pytest.fixture(scope="session")
def doubly_sensitive_cnn(sensitive_cnn: Path) -> Path:
    return _cached(
        "fashion-cnn-sensitive-conv2-conv3",
        lambda p: _make_fragile(sensitive_cnn, p, feeder="conv2", layer="conv3"),
        sensitive_cnn.name,
        OUTLIER,
    )


def _build_with_rescaling(fashion_mnist: Any, path: Path) -> None:
    """A CNN that rescales inside (Rescaling(1/255) first) and so is trained on raw 0-255 pixels, as many Keras
    models are: fed the default 1/255 scaling it sees every input divided by 255 twice."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Rescaling(1 / 255, name="rescale"),
            L.Conv2D(8, 3, activation="relu", name="conv1"),
            L.MaxPooling2D(name="pool1"),
            L.Flatten(name="flat"),
            L.Dense(10, name="logits"),
        ]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x = fashion_mnist.train_x[:RESCALING_TRAIN_SAMPLES, :, :, None].astype(np.float32)  # 0-255, not divided
    model.fit(x, fashion_mnist.train_y[:RESCALING_TRAIN_SAMPLES], epochs=1, batch_size=64, verbose=0)
    model.save(path)


RESCALING_TRAIN_SAMPLES = 10_000


@pytest.fixture(scope="session")
def rescaling_cnn(fashion_mnist: Any) -> Path:
    return _cached(
        "fashion-cnn-rescaling",
        lambda p: _build_with_rescaling(fashion_mnist, p),
        inspect.getsource(_build_with_rescaling),
        RESCALING_TRAIN_SAMPLES,
    )


def batches(x: np.ndarray, y: np.ndarray | None = None, size: int = 100) -> Any:
    from edgequant.backends.base import Batches

    labels = y if y is not None else np.zeros(len(x), dtype=np.int64)
    return Batches(
        make_iter=lambda: ((x[i : i + size], labels[i : i + size]) for i in range(0, len(x), size)),
        count=len(x),
        batch_size=size,
    )


@pytest.fixture(scope="session")
def source_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Any]:
    """Keras file -> the TFLite backend's SourceModel (loaded once per model)."""
    from edgequant.api import v1alpha1 as api
    from edgequant.backends.tflite.source import load_source

    done: dict[Path, Any] = {}

    def get(path: Path) -> Any:
        if path not in done:
            done[path] = load_source(path, fmt=api.ModelFormat.KERAS, workdir=tmp_path_factory.mktemp(path.stem[:20]))
        return done[path]

    return get


@pytest.fixture
def tflite_layers(source_model: Callable[[Path], Any], tmp_path: Path) -> Callable[..., Any]:
    from edgequant.api import v1alpha1 as api
    from edgequant.backends.tflite import convert as conv
    from edgequant.backends.tflite.sensitivity import TFLiteLayerAnalysis

    def make(model: Path, calibration: np.ndarray) -> TFLiteLayerAnalysis:
        source = source_model(model)
        converter = source.converter()
        conv.configure(
            converter, method=api.Method.TFLITE_INT8, representative=conv.representative_from(batches(calibration))
        )
        return TFLiteLayerAnalysis.prepare(
            converter=converter, keras_model=source.keras_model, workdir=tmp_path / "layers"
        )

    return make


@pytest.fixture(scope="session")
def score() -> Callable[[Path, np.ndarray, np.ndarray], float]:
    from edgequant.backends.tflite.predictor import TFLitePredictor
    from edgequant.worker.evaluate import evaluate

    def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
        result = evaluate(predictor=TFLitePredictor(path), data=batches(x, y), latency_runs=0)
        assert result.top1 is not None
        return result.top1

    return accuracy


def keras_to_onnx(keras_path: Path, onnx_path: Path) -> Path:
    """The test CNN's trained Keras weights as an NCHW ONNX graph (opset 17), one named node per layer op.

    Node names follow the Keras layers (conv1, relu1, pool1, ..., fc1, logits): those are the names
    sensitivity reports and pinnedLayers take for ONNX models.
    """
    import keras
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = keras.models.load_model(keras_path)
    inits, nodes = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    x = "input"
    for i, conv in enumerate(("conv1", "conv2", "conv3"), 1):
        kernel, bias = model.get_layer(conv).get_weights()  # HWIO
        w = const(f"{conv}.weight", kernel.transpose(3, 2, 0, 1))
        b = const(f"{conv}.bias", bias)
        nodes.append(helper.make_node("Conv", [x, w, b], [f"{conv}_out"], name=conv, kernel_shape=[3, 3]))
        nodes.append(helper.make_node("Relu", [f"{conv}_out"], [f"relu{i}_out"], name=f"relu{i}"))
        x = f"relu{i}_out"
        if i < 3:
            nodes.append(
                helper.make_node("MaxPool", [x], [f"pool{i}_out"], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2])
            )
            x = f"pool{i}_out"
    nodes.append(helper.make_node("Flatten", [x], ["flat_out"], name="flat", axis=1))
    k1, b1 = model.get_layer("fc1").get_weights()  # rows in Keras' HWC flatten order -> CHW
    k1 = k1.reshape(3, 3, 32, -1).transpose(2, 0, 1, 3).reshape(288, -1)
    nodes.append(
        helper.make_node("Gemm", ["flat_out", const("fc1.weight", k1), const("fc1.bias", b1)], ["fc1_out"], name="fc1")
    )
    nodes.append(helper.make_node("Relu", ["fc1_out"], ["relu4_out"], name="relu4"))
    k2, b2 = model.get_layer("logits").get_weights()
    nodes.append(
        helper.make_node(
            "Gemm", ["relu4_out", const("logits.weight", k2), const("logits.bias", b2)], ["logits"], name="logits"
        )
    )
    graph = helper.make_graph(
        nodes,
        "fashion_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, onnx_path)
    return onnx_path


@pytest.fixture(scope="session")
def onnx_cnn(
    tmp_path_factory: pytest.TempPathFactory, healthy_cnn: Path, sensitive_cnn: Path, doubly_sensitive_cnn: Path
) -> Callable[[str], Path]:
    """'healthy', 'sensitive' or 'doubly-sensitive' -> the same trained CNN as an ONNX file (NCHW)."""
    root = tmp_path_factory.mktemp("onnx")
    made: dict[str, Path] = {}

    def get(which: str) -> Path:
        if which not in made:
            source = {"healthy": healthy_cnn, "sensitive": sensitive_cnn, "doubly-sensitive": doubly_sensitive_cnn}[
                which
            ]
            made[which] = keras_to_onnx(source, root / f"{which}.onnx")
        return made[which]

    return get
