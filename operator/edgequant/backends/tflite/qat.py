"""Quantization-aware fine-tuning with tensorflow-model-optimization, then full-INT8 conversion.

The model is rebuilt in tf_keras (see legacy_keras), wrapped for QAT
(``wrap_for_qat``: tfmot's annotate + apply, with preprocessing layers
annotated by hand), fine-tuned briefly at a low learning rate on the training
set (fake-quant ranges are only learned by training: right after wrapping the
model scores near chance), then converted with uint8 input/output like
``tflite-int8``.

Preprocessing layers (Rescaling, Normalization, Resizing, CenterCrop) stay in
the model, so the artifact takes the same input as the source model. tfmot has
no QuantizeConfig for them; they get ``OutputOnlyQuantizeConfig``: no weights
to quantize, float arithmetic while training, and a learned 8-bit range on
their output, which is exactly what the converter needs to run them as int8
ops (MUL/ADD, RESIZE_*, SLICE).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.api import v1alpha1 as api
from edgequant.backends.base import Batches
from edgequant.backends.tflite.convert import RepresentativeData, configure, run_converter
from edgequant.backends.tflite.legacy_keras import PREPROCESSING, QAT_LAYER_FIX, import_tf_keras, to_tf_keras
from edgequant.backends.tflite.source import SourceModel
from edgequant.backends.tflite.tf import import_tf
from edgequant.util.errors import InvalidInputError

#: tf_keras layer classes kept in the QAT model with ``OutputOnlyQuantizeConfig`` (tfmot has no config for them).
OUTPUT_ONLY_LAYERS = frozenset(PREPROCESSING)
_TFMOT_UNSUPPORTED = re.compile(r"Layer (?P<name>[^:\s]+):<class '(?:[\w.]+\.)?(?P<cls>\w+)'> is not supported")


def _legacy_model(source: SourceModel) -> tuple[Any, list[str], dict[str, str]]:
    """The tf_keras model, notes on what the rebuild left out, and what each rebuilt preprocessing layer computes."""
    if source.keras_model is not None:
        rebuilt = to_tf_keras(source.keras_model)
        notes = [
            f"QAT: {name} ({cls}) left out of the QAT model and the artifact: it is the identity at "
            "inference (QAT fine-tunes without that augmentation)"
            for name, cls in rebuilt.dropped.items()
        ]
        return rebuilt.model, notes, rebuilt.preprocessing
    tf_keras = import_tf_keras()
    try:
        return tf_keras.models.load_model(str(source.path), compile=False, safe_mode=True), [], {}
    except Exception as exc:
        raise InvalidInputError(
            f"{source.path.name}: QAT needs a Keras model; this SavedModel has no Keras metadata "
            "(give the .keras/.h5 file instead)"
        ) from exc


@functools.cache
def output_only_quantize_config() -> type:
    """The QuantizeConfig class for preprocessing layers (made on first use: tfmot is imported only for QAT)."""
    import tensorflow_model_optimization as tfmot

    keras_q = tfmot.quantization.keras

    class OutputOnlyQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """No weights, no activations inside: only the layer's output gets an 8-bit range (asymmetric, per tensor,
        like tfmot's default activations)."""

        def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: list[Any]) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: list[Any]) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return [
                keras_q.quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self) -> dict[str, Any]:
            return {}

    return OutputOnlyQuantizeConfig


def _wrap_error(exc: Exception) -> str:
    text = str(exc).strip()
    found = _TFMOT_UNSUPPORTED.search(text)
    if found:
        return f"layer {found['name']!r} ({found['cls']}) cannot be wrapped for QAT by tensorflow-model-optimization: {QAT_LAYER_FIX}"
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    return f"tensorflow-model-optimization cannot wrap this model for QAT: {first} ({QAT_LAYER_FIX})"


def wrap_for_qat(model: Any, *, computes: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    """tfmot's QAT model of a tf_keras model, and one note per preprocessing layer on how it is quantized
    (``computes``: layer name -> what it computes, from the rebuild)."""
    import tensorflow_model_optimization as tfmot

    keras_q = tfmot.quantization.keras
    tf_keras = import_tf_keras()
    config = output_only_quantize_config()
    kept: list[Any] = []

    def annotate_preprocessing(layer: Any) -> Any:
        if type(layer).__name__ in OUTPUT_ONLY_LAYERS:
            kept.append(layer)
            return keras_q.quantize_annotate_layer(layer, quantize_config=config())
        return layer

    try:
        annotated = keras_q.quantize_annotate_model(
            tf_keras.models.clone_model(model, clone_function=annotate_preprocessing)
        )
        with keras_q.quantize_scope({config.__name__: config}):
            wrapped = keras_q.quantize_apply(annotated)
    except (RuntimeError, ValueError) as exc:
        raise InvalidInputError(_wrap_error(exc)) from exc
    notes = [
        f"QAT: {layer.name} ({(computes or {}).get(layer.name, type(layer).__name__)}) kept in the model, not folded into the "
        "input contract, so the artifact takes the same input as the source; no weights to quantize: float while "
        "fine-tuning with an 8-bit range learned on its output, int8 in the artifact"
        for layer in kept
    ]
    return wrapped, notes


def _outputs_are_probabilities(model: Any, x: np.ndarray) -> bool:
    out = np.asarray(model(x[:32], training=False))
    return bool(out.min() >= 0.0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def fine_tune(
    *, source: SourceModel, training: Batches, spec: api.Training, log: Callable[[str], None]
) -> tuple[Any, list[str]]:
    """The tf_keras QAT model after ``spec.epochs`` epochs at ``spec.learning_rate``, and notes for the report."""
    tf_keras = import_tf_keras()
    model, notes, computes = _legacy_model(source)
    qat_model, wrap_notes = wrap_for_qat(model, computes=computes)
    notes += wrap_notes
    parts = list(training)
    x = np.concatenate([b for b, _ in parts])
    y = np.concatenate([labels for _, labels in parts])
    from_logits = not _outputs_are_probabilities(model, x)
    qat_model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=spec.learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=["accuracy"],
    )

    def on_epoch_end(epoch: int, logs: dict[str, float] | None) -> None:
        logs = logs or {}
        log(
            f"QAT epoch {epoch + 1}/{spec.epochs}: loss {logs.get('loss', float('nan')):.4f}, accuracy {logs.get('accuracy', float('nan')):.4f}"
        )

    qat_model.fit(
        x,
        y,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[tf_keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)],
    )
    return qat_model, notes


def convert(qat_model: Any, *, representative: RepresentativeData, workdir: Path) -> bytes:
    tf = import_tf()
    export_dir = workdir / "qat-savedmodel"
    tf.saved_model.save(qat_model, str(export_dir))
    converter = tf.lite.TFLiteConverter.from_saved_model(str(export_dir))
    configure(converter, method=api.Method.TFLITE_QAT, representative=representative)
    return run_converter(converter, api.Method.TFLITE_QAT)
