"""The FP32 source model: load Keras (.keras/.h5) or SavedModel, check its input, hand out converters.

``SourceModel.converter()`` is the cheapest converter for the source: Keras
models go through ``TFLiteConverter.from_keras_model`` (measured here: 0.74 s
CPU for a full-INT8 conversion against 0.99 s for ``model.export`` +
``from_saved_model``), SavedModels through ``from_saved_model``. Code that
needs a SavedModel of a Keras model (per-layer analysis) reads
``saved_model_dir``: it is exported on first use the way ``from_keras_model``
exports internally, one ``serve`` endpoint calling the model with
``training=False``, so BatchNormalization and Dropout run in inference mode.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.api import v1alpha1 as api
from edgequant.backends.tflite.model_safety import check_keras_file, check_saved_model
from edgequant.backends.tflite.tf import import_keras, import_tf
from edgequant.util.errors import InvalidInputError


@dataclass
class SourceModel:
    path: Path
    format: api.ModelFormat
    input_shape: tuple[int | None, ...]
    """Model input shape including the batch dimension (None = any)."""
    keras_model: Any | None = None
    """The Keras 3 model for .keras/.h5 sources; None for SavedModels."""
    workdir: Path | None = None
    _saved_model_dir: Path | None = None

    @property
    def saved_model_dir(self) -> Path:
        """A SavedModel of the source (the source itself, or an inference export made once in ``workdir``)."""
        if self._saved_model_dir is None:
            assert self.keras_model is not None and self.workdir is not None
            export_dir = self.workdir / "fp32-savedmodel"
            if not (export_dir / "saved_model.pb").is_file():
                export_inference_savedmodel(self.keras_model, export_dir)
            self._saved_model_dir = export_dir
        return self._saved_model_dir

    def converter(self) -> Any:
        """A fresh TFLiteConverter for this model, not yet configured."""
        tf = import_tf()
        if self.keras_model is not None:
            return tf.lite.TFLiteConverter.from_keras_model(self.keras_model)
        return tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model_dir))


def _first_error_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def load_source(path: Path, *, fmt: api.ModelFormat, workdir: Path) -> SourceModel:
    """Load the model (SavedModels: its serving signature) and read its input shape; refuse models that carry
    Python code (model_safety) before any loader reads them."""
    tf = import_tf()
    if fmt is api.ModelFormat.SAVED_MODEL:
        if not (path / "saved_model.pb").is_file():
            raise InvalidInputError(
                f"{path.name}: not a SavedModel folder (no saved_model.pb); export one with model.export(dir)"
            )
        check_saved_model(path)
        try:
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
        except Exception as exc:
            raise InvalidInputError(
                f"{path.name}: cannot load the SavedModel's serving_default signature: {_first_error_line(exc)}"
            ) from exc
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise InvalidInputError(
                f"{path.name}: the serving signature has {len(inputs)} inputs; edgequant quantizes single-input vision models"
            )
        shape = tuple(next(iter(inputs.values())).shape.as_list())
        return SourceModel(path=path, format=fmt, input_shape=shape, _saved_model_dir=path)
    check_keras_file(path, fmt)
    keras = import_keras()
    try:
        # safe_mode=True explicitly: Keras refuses Lambda bytecode itself too (check_keras_file refused it already).
        model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        raise InvalidInputError(
            f"{path.name}: cannot load as a Keras model ({fmt.value}): {_first_error_line(exc)}"
        ) from exc
    if len(model.inputs) != 1:
        raise InvalidInputError(
            f"{path.name}: the model has {len(model.inputs)} inputs; edgequant quantizes single-input vision models"
        )
    shape = tuple(model.inputs[0].shape)
    return SourceModel(path=path, format=fmt, input_shape=shape, keras_model=model, workdir=workdir)


def export_inference_savedmodel(model: Any, export_dir: Path) -> None:
    """Write ``model`` as a SavedModel with one ``serve`` endpoint in inference mode."""
    tf, keras = import_tf(), import_keras()
    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = [tf.TensorSpec(t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
    archive.write_out(str(export_dir), verbose=False)


def check_input_shape(source: SourceModel, contract: api.InputContract) -> None:
    """The spec's input contract must describe the model's real input."""
    model_shape = list(source.input_shape[1:])
    expected = list(contract.shape)
    if len(model_shape) != len(expected) or any(m is not None and m != e for m, e in zip(model_shape, expected)):
        raise InvalidInputError(
            f"spec.model.input.shape is {expected} ({contract.layout.value}) but the model's input is "
            f"{['?' if m is None else m for m in model_shape]} (without the batch dimension): fix the shape or layout"
        )
