"""Keras 3 model -> the same model in tf_keras (Keras 2), for tensorflow-model-optimization.

TensorFlow ships Keras 3, but tfmot's ``quantize_model`` only accepts tf_keras
Sequential/Functional models ("`to_quantize` can only either be a keras
Sequential or Functional model" otherwise). tfmot imports ``tf_keras`` by
itself when ``tf.keras`` is Keras 3, so both live in one process; what is
needed is the model in tf_keras form. This module rebuilds the layer graph
from the Keras 3 config (layer classes and arguments are the same in both
for the layers tfmot supports) and copies the weights layer by layer.
Preprocessing layers, whose arguments differ between the two Kerases, are
rebuilt from the Keras 3 layer's values (``PREPROCESSING``); random
augmentation layers, the identity at inference, are left out
(``INFERENCE_IDENTITY``). tf_keras and tfmot are installed with --no-deps
(requirements/tflite-nodeps.txt).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgequant.backends.tflite.tf import import_tf
from edgequant.util.errors import InvalidInputError

#: Keras 3 config keys tf_keras does not know. Initializers are dropped too: weights are copied afterwards.
_KERAS3_ONLY = {"optional", "quantization_config", "lora_rank", "lora_alpha"}


#: Keras 3 augmentation layers that return their input unchanged at inference: left out of the QAT model.
INFERENCE_IDENTITY = frozenset(
    {"RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast", "RandomBrightness"}
)
#: TFLite has int8 kernels for these resize methods only (RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR).
_TFLITE_RESIZE = ("bilinear", "nearest")


@dataclass
class Rebuilt:
    """The tf_keras model; per layer name, what each rebuilt preprocessing layer computes (in words) and the class
    of each augmentation layer left out."""

    model: Any
    preprocessing: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


def import_tf_keras() -> Any:
    import_tf()
    import tf_keras

    return tf_keras


def _plain(obj: Any) -> Any:
    """Keras 3 serialisation -> what tf_keras deserialises: dtype policies become their name."""
    if isinstance(obj, dict):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(obj.get("config"), dict):
            return obj["config"]["name"]
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _layer(tf_keras: Any, layer_config: dict[str, Any]) -> Any:
    config = {
        k: v
        for k, v in _plain(layer_config["config"]).items()
        if k not in _KERAS3_ONLY and not k.endswith("_initializer")
    }

    def refuse(reason: str) -> InvalidInputError:
        return InvalidInputError(
            f"layer {config.get('name')!r} ({layer_config['class_name']}) has no tf_keras equivalent for QAT ({reason}): {QAT_LAYER_FIX}"
        )

    if layer_config.get("registered_name"):  # a custom class: tf_keras cannot know what it computes
        raise refuse(f"custom layer {layer_config['registered_name']}")
    try:
        layer = tf_keras.layers.deserialize({"class_name": layer_config["class_name"], "config": config})
    except Exception as exc:
        raise refuse(str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__) from exc
    if not isinstance(layer, tf_keras.layers.Layer):
        raise refuse("not a tf_keras layer class")
    return layer


def _plain_values(value: Any) -> Any:
    """A scale, offset, mean or variance as a float or nested lists (JSON-serialisable in the QAT SavedModel)."""
    array = np.asarray(value, dtype=np.float64)
    return float(array) if array.ndim == 0 else array.tolist()


def _rescaling(tf_keras: Any, layer: Any) -> tuple[Any, str]:
    scale, offset = _plain_values(layer.scale), _plain_values(layer.offset)
    return tf_keras.layers.Rescaling(scale, offset, name=layer.name), f"x * {_short(scale)} + {_short(offset)}"


def _normalization(tf_keras: Any, layer: Any) -> tuple[Any, str]:
    """The same per-channel affine as Rescaling: TFLite runs it as int8 MUL + ADD (tf_keras Normalization's
    division converts with a float DEQUANTIZE/QUANTIZE hop)."""
    if getattr(layer, "mean", None) is None:
        raise InvalidInputError(
            f"layer {layer.name!r} (Normalization) has no mean/variance: call adapt() or pass mean= and variance= before saving"
        )
    mean = np.asarray(layer.mean, dtype=np.float64)
    std = np.maximum(np.sqrt(np.asarray(layer.variance, dtype=np.float64)), 1e-7)  # Keras' backend.epsilon()
    scale, offset = (std, mean) if layer.invert else (1.0 / std, -mean / std)
    rebuilt = tf_keras.layers.Rescaling(_plain_values(scale), _plain_values(offset), name=layer.name)
    kind = "x * std + mean" if layer.invert else "(x - mean) / std"
    return rebuilt, f"{kind} as the per-channel affine x * {_short(scale)} + {_short(offset)}"


def _resizing(tf_keras: Any, layer: Any) -> tuple[Any, str]:
    name = f"layer {layer.name!r} (Resizing)"
    if layer.interpolation not in _TFLITE_RESIZE:
        raise InvalidInputError(
            f"{name}: interpolation {layer.interpolation!r} has no int8 TFLite kernel; use 'bilinear' or 'nearest'"
        )
    for option in ("pad_to_aspect_ratio", "antialias"):
        if getattr(layer, option, False):
            raise InvalidInputError(f"{name}: {option}=True has no tf_keras/TFLite equivalent for QAT; set it to False")
    rebuilt = tf_keras.layers.Resizing(
        layer.height,
        layer.width,
        interpolation=layer.interpolation,
        crop_to_aspect_ratio=layer.crop_to_aspect_ratio,
        name=layer.name,
    )
    crop = ", cropped to the aspect ratio" if layer.crop_to_aspect_ratio else ""
    return rebuilt, f"{layer.interpolation} resize to {layer.height}x{layer.width}{crop}"


def _center_crop(tf_keras: Any, layer: Any) -> tuple[Any, str]:
    return tf_keras.layers.CenterCrop(
        layer.height, layer.width, name=layer.name
    ), f"center crop to {layer.height}x{layer.width}"


def _short(value: Any) -> str:
    flat = np.asarray(value, dtype=np.float64).ravel()
    text = ", ".join(f"{v:.6g}" for v in flat[:4]) + (", ..." if flat.size > 4 else "")
    return text if flat.size == 1 else f"[{text}]"


#: Keras 3 preprocessing layer class -> (tf_keras layer with the same arithmetic, what it does in words).
PREPROCESSING: dict[str, Callable[[Any, Any], tuple[Any, str]]] = {
    "Rescaling": _rescaling,
    "Normalization": _normalization,
    "Resizing": _resizing,
    "CenterCrop": _center_crop,
}

#: What to do when a layer cannot be rebuilt or wrapped for QAT; one text for every such error.
QAT_LAYER_FIX = (
    "tflite-qat runs on built-in Keras layers that tensorflow-model-optimization supports, plus "
    f"{', '.join(PREPROCESSING)} and {', '.join(sorted(INFERENCE_IDENTITY))}: rebuild the model without this layer "
    "(or with built-in layers doing the same), or use tflite-int8, which quantizes after training and needs no wrapping"
)


def _check_channels_last(layer: Any) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise InvalidInputError(
            f"layer {layer.name!r} ({type(layer).__name__}): data_format {layer.data_format!r}; QAT rebuilds channels_last (NHWC) models only: build it with data_format='channels_last'"
        )


def _input(tf_keras: Any, layer_config: dict[str, Any]) -> Any:
    config = layer_config["config"]
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    return tf_keras.Input(batch_shape=shape, name=config["name"], dtype=config.get("dtype", "float32"))


def to_tf_keras(model: Any) -> Rebuilt:
    """Rebuild a Keras 3 Sequential or Functional model in tf_keras, with the same weights."""
    tf_keras = import_tf_keras()
    document = json.loads(model.to_json())
    config = document["config"]
    layer_configs = config["layers"]
    source_layers = {layer.name: layer for layer in model.layers}
    preprocessing: dict[str, str] = {}
    dropped: dict[str, str] = {}

    def rebuild(layer_config: dict[str, Any]) -> Any:
        """The tf_keras layer for one Keras 3 layer config; None for a layer left out."""
        class_name, name = layer_config["class_name"], layer_config["config"]["name"]
        if class_name in INFERENCE_IDENTITY:
            dropped[name] = class_name
            return None
        if class_name in PREPROCESSING:
            source = source_layers[name]
            _check_channels_last(source)
            layer, words = PREPROCESSING[class_name](tf_keras, source)
            preprocessing[name] = f"{class_name}: {words}"
            return layer
        return _layer(tf_keras, layer_config)

    if document["class_name"] == "Sequential":
        if not layer_configs or layer_configs[0]["class_name"] != "InputLayer":
            raise InvalidInputError("the Sequential model has no Input layer; build it with keras.Input(shape) first")
        x = inputs = _input(tf_keras, layer_configs[0])
        for layer_config in layer_configs[1:]:
            layer = rebuild(layer_config)
            x = x if layer is None else layer(x)
        rebuilt = tf_keras.Model(inputs, x, name=config.get("name"))
    elif document["class_name"] in ("Functional", "Model"):
        tensors: dict[tuple[str, int, int], Any] = {}

        def resolve(arg: Any) -> Any:
            if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
                return tensors[tuple(arg["config"]["keras_history"])]
            if isinstance(arg, list):
                return [resolve(a) for a in arg]
            return arg

        for layer_config in layer_configs:
            name = layer_config["name"]
            if layer_config["class_name"] == "InputLayer":
                tensors[(name, 0, 0)] = _input(tf_keras, layer_config)
                continue
            layer = rebuild(layer_config)
            for node_index, node in enumerate(layer_config.get("inbound_nodes", [])):
                args = resolve(node["args"])
                out = args[0] if layer is None else layer(*args, **{k: resolve(v) for k, v in node["kwargs"].items()})
                for tensor_index, tensor in enumerate(out if isinstance(out, list | tuple) else [out]):
                    tensors[(name, node_index, tensor_index)] = tensor

        def ends(spec: Any) -> Any:
            if spec and isinstance(spec[0], list):
                found = [tensors[tuple(s)] for s in spec]
                return found if len(found) > 1 else found[0]
            return tensors[tuple(spec)]

        rebuilt = tf_keras.Model(ends(config["input_layers"]), ends(config["output_layers"]), name=config.get("name"))
    else:
        raise InvalidInputError(
            f"QAT needs a Sequential or Functional Keras model; this one is a subclassed {document['class_name']} "
            "(rebuild it with the functional API)"
        )
    for layer in rebuilt.layers:
        source = source_layers.get(layer.name)
        if source is not None and source.weights and layer.name not in preprocessing:
            layer.set_weights(source.get_weights())
    return Rebuilt(model=rebuilt, preprocessing=preprocessing, dropped=dropped)
