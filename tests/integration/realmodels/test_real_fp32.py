"""The FP32 real models load through edgequant's backends with their contracts and classify real photographs sensibly.

A wrong contract (colour order, scaling, layout) does not crash a classifier: it quietly collapses its
predictions onto a few classes or flips them. So these tests check what the predictions look like on
photographs: spread over many of EfficientNet-Lite0's 1000 classes, the right class on scikit-image's
cat and coffee photographs, Open-NSFW calling wallpapers safe, and the Keras rebuild (TFLite path)
agreeing with the ONNX export.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.realmodels.conftest import contract_of
from tests.realmodels import RealModel

pytestmark = pytest.mark.integration

#: ImageNet-1k indices: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_CLASSES = frozenset(range(281, 286))
#: ImageNet-1k indices: coffee mug, espresso, cup.
COFFEE_CLASSES = frozenset({504, 967, 968})
#: Logit margin (top-1 minus top-2) above which float rounding cannot swap the top class.
CLEAR_MARGIN = 1e-2


def _spec(model: RealModel, method: str, tmp_path: Path) -> Any:
    from edgequant.worker.runner import spec_from_document

    document = {
        "method": method,
        "model": {"uri": model.uri, "input": model.contract},
        "output": {"uri": (tmp_path / "out").as_uri() + "/"},
    }
    if method in ("tflite-int8", "onnx-static"):
        document["calibration"] = {"dataset": {"uri": "file:///unused.npz", "layout": "npz"}}
    return spec_from_document(document)[0]


def _ort_predictor(model: RealModel, tmp_path: Path) -> Any:
    from edgequant.api.backend_options import backend_options
    from edgequant.backends.onnxruntime.backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend().load(model.path, options=backend_options(_spec(model, "onnx-static", tmp_path)))


def _margin(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@pytest.fixture(scope="module")
def lite0_logits(
    lite0_onnx: RealModel, model_inputs: Callable[..., np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> np.ndarray:
    predictor = _ort_predictor(lite0_onnx, tmp_path_factory.mktemp("lite0"))
    return predictor.predict(model_inputs(lite0_onnx, "evaluation", 300))


def test_lite0_spreads_its_predictions_over_many_classes(lite0_logits: np.ndarray) -> None:
    """300 tiles of 11 photographs: measured 103 distinct top-1 classes, the commonest 17 times (6%)."""
    assert lite0_logits.shape == (300, 1000)
    assert np.isfinite(lite0_logits).all()
    top1 = lite0_logits.argmax(axis=1)
    counts = np.bincount(top1, minlength=1000)
    assert len(np.unique(top1)) >= 40, (
        f"only {len(np.unique(top1))} distinct classes: the contract collapses the inputs"
    )
    assert counts.max() <= 0.15 * len(top1), f"class {counts.argmax()} takes {counts.max()} of {len(top1)} predictions"


def test_lite0_predictions_do_not_depend_on_the_batch(
    lite0_onnx: RealModel,
    lite0_logits: np.ndarray,
    model_inputs: Callable[..., np.ndarray],
    tmp_path: Path,
) -> None:
    predictor = _ort_predictor(lite0_onnx, tmp_path)
    x = model_inputs(lite0_onnx, "evaluation", 300)
    one_by_one = np.concatenate([predictor.predict(x[i : i + 1]) for i in range(0, 300, 5)])
    reference = lite0_logits[::5]
    clear = _margin(reference) > CLEAR_MARGIN
    assert clear.sum() >= 0.8 * len(reference)
    np.testing.assert_array_equal(one_by_one.argmax(axis=1)[clear], reference.argmax(axis=1)[clear])


def test_lite0_contract_names_the_cat_and_the_coffee(lite0_onnx: RealModel, tmp_path: Path) -> None:
    """Whole scikit-image photographs through the contract's centre crop: the classes a person would name."""
    import skimage.data

    from edgequant.data.preprocess import preprocess

    contract = contract_of(lite0_onnx)
    predictor = _ort_predictor(lite0_onnx, tmp_path)
    batch = np.stack([preprocess(skimage.data.chelsea(), contract), preprocess(skimage.data.coffee(), contract)])
    cat, coffee = predictor.predict(batch).argmax(axis=1)
    assert int(cat) in CAT_CLASSES
    assert int(coffee) in COFFEE_CLASSES


def test_open_nsfw_calls_the_wallpapers_safe(
    nsfw_onnx: RealModel, model_inputs: Callable[..., np.ndarray], tmp_path: Path
) -> None:
    """Landscapes, flowers and still lifes: measured 298 of 300 safe (class 0), mean NSFW score 0.02."""
    scores = _ort_predictor(nsfw_onnx, tmp_path).predict(model_inputs(nsfw_onnx, "evaluation", 100))
    assert scores.shape == (100, 2)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)  # the model ends in a softmax
    assert (scores.argmax(axis=1) == 0).mean() >= 0.95
    assert scores[:, 1].mean() < 0.1


def test_lite0_keras_rebuild_matches_the_onnx_export_through_the_tflite_predictor(
    lite0_keras: RealModel,
    lite0_onnx: RealModel,
    model_inputs: Callable[..., np.ndarray],
    tmp_path: Path,
) -> None:
    """The Keras model (TFLite path, converted to float TFLite by the backend) and the ONNX export are one network."""
    from edgequant.api.backend_options import backend_options
    from edgequant.backends.tflite.backend import TFLiteBackend

    workdir = tmp_path / "model"
    workdir.mkdir()
    (workdir / lite0_keras.path.name).symlink_to(lite0_keras.path)
    predictor = TFLiteBackend().load(
        workdir / lite0_keras.path.name, options=backend_options(_spec(lite0_keras, "tflite-int8", tmp_path))
    )
    logits = predictor.predict(model_inputs(lite0_keras, "evaluation", 100))
    reference = _ort_predictor(lite0_onnx, tmp_path).predict(model_inputs(lite0_onnx, "evaluation", 100))
    clear = _margin(reference) > CLEAR_MARGIN
    assert clear.sum() >= 80
    np.testing.assert_array_equal(logits.argmax(axis=1)[clear], reference.argmax(axis=1)[clear])
    assert np.abs(logits - reference).max() < 0.05
