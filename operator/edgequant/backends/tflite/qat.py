"""Quantization-aware fine-tuning with tensorflow-model-optimization, then full-INT8 conversion.

The model is rebuilt in tf_keras (see legacy_keras), wrapped with
``tfmot.quantization.keras.quantize_model``, fine-tuned briefly at a low
learning rate on the training set (fake-quant ranges are only learned by
training: right after wrapping the model scores near chance), then converted
with uint8 input/output like ``tflite-int8``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.backends.tflite.convert import RepresentativeData, configure, run_converter
from edgequant.backends.tflite.legacy_keras import import_tf_keras, to_tf_keras
from edgequant.backends.tflite.source import SourceModel
from edgequant.backends.tflite.tf import import_tf
from edgequant.util.errors import InvalidInputError


def _legacy_model(source: SourceModel) -> Any:
    if source.keras_model is not None:
        return to_tf_keras(source.keras_model)
    tf_keras = import_tf_keras()
    try:
        return tf_keras.models.load_model(str(source.path), compile=False, safe_mode=True)
    except Exception as exc:
        raise InvalidInputError(
            f"{source.path.name}: QAT needs a Keras model; this SavedModel has no Keras metadata "
            "(give the .keras/.h5 file instead)"
        ) from exc


def _outputs_are_probabilities(model: Any, x: np.ndarray) -> bool:
    out = np.asarray(model(x[:32], training=False))
    return bool(out.min() >= 0.0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def fine_tune(*, source: SourceModel, training: Batches, spec: api.Training, log: Callable[[str], None]) -> Any:
    """The tf_keras QAT model after ``spec.epochs`` epochs at ``spec.learning_rate``."""
    import tensorflow_model_optimization as tfmot

    tf_keras = import_tf_keras()
    model = _legacy_model(source)
    parts = list(training)
    x = np.concatenate([b for b, _ in parts])
    y = np.concatenate([labels for _, labels in parts])
    try:
        qat_model = tfmot.quantization.keras.quantize_model(model)
    except (RuntimeError, ValueError) as exc:
        raise InvalidInputError(f"tensorflow-model-optimization cannot wrap this model for QAT: {str(exc).splitlines()[0][:300]}") from exc
    from_logits = not _outputs_are_probabilities(model, x)
    qat_model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=spec.learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )

    def on_epoch_end(epoch: int, logs: dict[str, float] | None) -> None:
        logs = logs or {}
        log(f"QAT epoch {epoch + 1}/{spec.epochs}: loss {logs.get('loss', float('nan')):.4f}, accuracy {logs.get('accuracy', float('nan')):.4f}")

    qat_model.fit(
        x, y, batch_size=spec.batch_size, epochs=spec.epochs, shuffle=True, verbose=0,
        callbacks=[tf_keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)],
    )
    return qat_model


def convert(qat_model: Any, *, representative: RepresentativeData, workdir: Path) -> bytes:
    tf = import_tf()
    export_dir = workdir / "qat-savedmodel"
    tf.saved_model.save(qat_model, str(export_dir))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(export_dir))
    configure(converter, method=api.Method.TFLITE_QAT, representative=representative)
    return run_converter(converter, api.Method.TFLITE_QAT)
