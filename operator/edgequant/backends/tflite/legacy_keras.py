"""Keras 3 model -> the same model in tf_keras (Keras 2), for tensorflow-model-optimization.

TensorFlow ships Keras 3, but tfmot's ``quantize_model`` only accepts tf_keras
Sequential/Functional models ("`to_quantize` can only either be a keras
Sequential or Functional model" otherwise). tfmot imports ``tf_keras`` by
itself when ``tf.keras`` is Keras 3, so both live in one process; what is
needed is the model in tf_keras form. This module rebuilds the layer graph
from the Keras 3 config (layer classes and arguments are the same in both
for the layers tfmot supports) and copies the weights layer by layer.
tf_keras and tfmot are installed with --no-deps (requirements/tflite-nodeps.txt).
"""

from __future__ import annotations

import json
from typing import Any

from edgequant.backends.tflite.tf import import_tf
from edgequant.util.errors import InvalidInputError

#: Keras 3 config keys tf_keras does not know. Initializers are dropped too: weights are copied afterwards.
_KERAS3_ONLY = {"optional", "quantization_config", "lora_rank", "lora_alpha"}


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
        k: v for k, v in _plain(layer_config["config"]).items()
        if k not in _KERAS3_ONLY and not k.endswith("_initializer")
    }
    try:
        return tf_keras.layers.deserialize({"class_name": layer_config["class_name"], "config": config})
    except Exception as exc:
        raise InvalidInputError(
            f"layer {config.get('name')!r} ({layer_config['class_name']}) has no tf_keras equivalent for QAT: {exc}"
        ) from exc


def _input(tf_keras: Any, layer_config: dict[str, Any]) -> Any:
    config = layer_config["config"]
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    return tf_keras.Input(batch_shape=shape, name=config["name"], dtype=config.get("dtype", "float32"))


def to_tf_keras(model: Any) -> Any:
    """Rebuild a Keras 3 Sequential or Functional model in tf_keras, with the same weights."""
    tf_keras = import_tf_keras()
    document = json.loads(model.to_json())
    config = document["config"]
    layer_configs = config["layers"]
    if document["class_name"] == "Sequential":
        if not layer_configs or layer_configs[0]["class_name"] != "InputLayer":
            raise InvalidInputError("the Sequential model has no Input layer; build it with keras.Input(shape) first")
        x = inputs = _input(tf_keras, layer_configs[0])
        for layer_config in layer_configs[1:]:
            x = _layer(tf_keras, layer_config)(x)
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
            layer = _layer(tf_keras, layer_config)
            for node_index, node in enumerate(layer_config.get("inbound_nodes", [])):
                out = layer(*resolve(node["args"]), **{k: resolve(v) for k, v in node["kwargs"].items()})
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
    by_name = {layer.name: layer for layer in model.layers}
    for layer in rebuilt.layers:
        source = by_name.get(layer.name)
        if source is not None and source.weights:
            layer.set_weights(source.get_weights())
    return rebuilt
