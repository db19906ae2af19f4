"""Loading a model runs none of its author's Python code (issue 13, item 6).

Each model below carries code that writes a marker file when it runs. The test first proves that the code does
run when the file is loaded the unsafe way (so the model is a real attack), then that edgequant refuses the file with
InvalidInput and a fix, and that the marker never appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgequant.api import v1alpha1 as api
from edgequant.backends.tflite.source import load_source
from edgequant.util.errors import InvalidInputError

pytestmark = pytest.mark.integration

FIX = "model.export('dir/')"


def _keras() -> Any:
    from edgequant.backends.tflite.tf import import_keras

    return import_keras()


def _refused(path: Path, fmt: api.ModelFormat, marker: Path, tmp_path: Path, *words: str) -> None:
    marker.unlink(missing_ok=True)
    with pytest.raises(InvalidInputError) as err:
        load_source(path, fmt=fmt, workdir=tmp_path / "work")
    for word in (*words, FIX):
        assert word in str(err.value), str(err.value)
    assert not marker.exists(), "the model's code ran"


def _writes_marker(marker: Path) -> Any:
    """A lambda whose bytecode holds the marker path as a constant (Keras serialises code, not closures)."""
    return eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307 - the attack under test


def _lambda_model(marker: Path) -> Any:
    keras = _keras()
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Lambda(_writes_marker(marker), name="sneaky")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(outputs)))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_layers_are_refused_before_they_run(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / f"model{suffix}"
    _lambda_model(marker).save(path)
    marker.unlink(missing_ok=True)
    if suffix == ".keras":  # the control: the unsafe loader runs the author's code
        _keras().models.load_model(path, compile=False, safe_mode=False)
        assert marker.exists()
    fmt = api.ModelFormat.KERAS if suffix == ".keras" else api.ModelFormat.H5
    _refused(path, fmt, marker, tmp_path, "Lambda layer ('sneaky')")


def test_custom_objects_are_refused_before_they_run(tmp_path: Path) -> None:
    keras = _keras()
    marker = tmp_path / "marker"

    @keras.saving.register_keras_serializable(package="attacker")
    class Marker(keras.layers.Layer):  # type: ignore[misc]
        def call(self, x: Any) -> Any:
            marker.write_text("ran")
            return x

    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(Marker()(inputs))))
    path = tmp_path / "custom.keras"
    model.save(path)
    marker.unlink(missing_ok=True)
    keras.models.load_model(path, compile=False)  # the control: registered in this process, Keras would run it
    assert marker.exists()
    _refused(path, api.ModelFormat.KERAS, marker, tmp_path, "custom object")


def test_a_legacy_savedmodel_with_a_lambda_is_refused(tmp_path: Path) -> None:
    from edgequant.backends.tflite.legacy_keras import import_tf_keras

    tf_keras = import_tf_keras()
    marker = tmp_path / "marker"
    model = tf_keras.Sequential(
        [
            tf_keras.Input((28, 28, 1)),
            tf_keras.layers.Lambda(_writes_marker(marker), name="sneaky"),
            tf_keras.layers.Flatten(),
            tf_keras.layers.Dense(10),
        ]
    )
    path = tmp_path / "legacy_saved"
    tf_keras.models.save_model(model, str(path), save_format="tf")
    marker.unlink(missing_ok=True)
    tf_keras.models.load_model(str(path), compile=False)  # the control: tf_keras revives the Lambda's bytecode
    assert marker.exists()
    _refused(path, api.ModelFormat.SAVED_MODEL, marker, tmp_path, "Lambda layer ('sneaky')")


def test_a_savedmodel_whose_graph_writes_files_is_refused(tmp_path: Path) -> None:
    from edgequant.backends.tflite.tf import import_tf

    tf = import_tf()
    marker = tmp_path / "marker"

    class Writer(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
        def serve(self, x: Any) -> Any:
            tf.io.write_file(str(marker), "ran")
            return {"logits": tf.reduce_mean(x, axis=[1, 2])}

    module = Writer()
    path = tmp_path / "graph_saved"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    tf.saved_model.load(str(path)).signatures["serving_default"](x=tf.constant(np.zeros((1, 28, 28, 1), np.float32)))
    assert marker.exists()  # the control: running the graph writes the file
    _refused(path, api.ModelFormat.SAVED_MODEL, marker, tmp_path, "WriteFile")


def test_a_plain_model_still_loads(tmp_path: Path) -> None:
    keras = _keras()
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))))
    for name, fmt in (("plain.keras", api.ModelFormat.KERAS), ("plain.h5", api.ModelFormat.H5)):
        model.save(tmp_path / name)
        assert load_source(tmp_path / name, fmt=fmt, workdir=tmp_path / "work").input_shape == (None, 28, 28, 1)
    model.export(str(tmp_path / "exported"), verbose=False)
    assert load_source(
        tmp_path / "exported", fmt=api.ModelFormat.SAVED_MODEL, workdir=tmp_path / "work"
    ).input_shape == (None, 28, 28, 1)
